"""Docker's default seccomp profile, built as a Docker-format (``seccomp.json``) dictionary.

The policy is moby's ``profiles/seccomp/default.json``: everything not listed fails with EPERM;
a large allow-list of ordinary syscalls; namespace, mount, module, clock, reboot and tracing
syscalls only with the matching capability (``includes.caps``); ``clone`` without namespace
flags; ``clone3`` answered with ENOSYS so libc falls back to ``clone``; ``socket`` for every
family but AF_VSOCK; ``personality`` only for the harmless personas.
"""

from __future__ import annotations

from typing import Any

ENOSYS = 38
AF_VSOCK = 40
#: CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: clone flags a container may not use.
CLONE_NS_FLAGS = 0x7E020000

_ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday
getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get
ioprio_set io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset
landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr llistxattr
_llseek lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier
memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2
mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall
munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl
pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev
pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64
recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid
setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid
setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr
shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn
socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit
umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4
waitid waitpid write writev
"""

# syscalls allowed only when the container holds the capability (Docker's "includes.caps")
_BY_CAP: dict[str, str] = {
    "CAP_SYS_ADMIN": "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie "
                     "mount mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd "
                     "setdomainname sethostname setns syslog umount umount2 unshare",
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_CHROOT": "chroot",
    "CAP_SYS_MODULE": "delete_module init_module finit_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
}

_BY_ARCH: list[tuple[str, list[str]]] = [
    ("arch_prctl", ["amd64", "x32"]),
    ("modify_ldt", ["amd64", "x32", "x86"]),
    ("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
     ["arm", "arm64"]),
    ("sync_file_range2 swapcontext", ["ppc64le"]),
    ("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr", ["s390", "s390x"]),
    ("riscv_flush_icache", ["riscv64"]),
]

_ARCH_MAP = [
    ("SCMP_ARCH_X86_64", ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    ("SCMP_ARCH_AARCH64", ["SCMP_ARCH_ARM"]),
    ("SCMP_ARCH_S390X", ["SCMP_ARCH_S390"]),
    ("SCMP_ARCH_RISCV64", []),
]

# personality(2) personas Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
# and 0xffffffff (query)
_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)


def _rule(names: str, action: str = "SCMP_ACT_ALLOW", **extra: Any) -> dict[str, Any]:
    return {"names": names.split(), "action": action, **extra}


def default_profile() -> dict[str, Any]:
    """A fresh copy of Docker's default profile in Docker's JSON format."""
    rules: list[dict[str, Any]] = [_rule(_ALLOWED)]
    rules.append(_rule("process_vm_readv process_vm_writev ptrace", includes={"minKernel": "4.8"}))
    rules.append(_rule("socket", args=[{"index": 0, "value": AF_VSOCK, "valueTwo": 0,
                                         "op": "SCMP_CMP_NE"}]))
    for persona in _PERSONAS:
        rules.append(_rule("personality", args=[{"index": 0, "value": persona, "valueTwo": 0,
                                                 "op": "SCMP_CMP_EQ"}]))
    for names, arches in _BY_ARCH:
        rules.append(_rule(names, includes={"arches": arches}))
    for cap, names in _BY_CAP.items():
        rules.append(_rule(names, includes={"caps": [cap]}))
    # clone without namespace flags (s390 swaps clone's first two arguments)
    rules.append(_rule("clone", args=[{"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0,
                                       "op": "SCMP_CMP_MASKED_EQ"}],
                       excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}))
    rules.append(_rule("clone", args=[{"index": 1, "value": CLONE_NS_FLAGS, "valueTwo": 0,
                                       "op": "SCMP_CMP_MASKED_EQ"}],
                       includes={"arches": ["s390", "s390x"]}, excludes={"caps": ["CAP_SYS_ADMIN"]}))
    # clone3's flags live in memory seccomp cannot inspect: make libc fall back to clone
    rules.append(_rule("clone3", "SCMP_ACT_ERRNO", errnoRet=ENOSYS,
                       excludes={"caps": ["CAP_SYS_ADMIN"]}))
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [{"architecture": a, "subArchitectures": subs} for a, subs in _ARCH_MAP],
        "syscalls": rules,
    }
