"""seccomp through libseccomp (ctypes binding to ``libseccomp.so.2``), fed Docker-format profiles.

``load(profile_spec, caps)`` is what the sandbox calls: ``None`` loads Docker's default profile
(:func:`default_profile`), ``"unconfined"`` nothing, anything else is a path to a Docker-format
JSON profile. Rules are filtered like moby's ``profiles/seccomp`` loader: a rule applies when its
``includes`` (caps all held, native arch listed, kernel at least ``minKernel``) match and its
``excludes`` do not.

libseccomp generates the classic-BPF program (:func:`export_bpf`, ~30 ms for Docker's profile);
the sandbox installs it with ``prctl(PR_SET_SECCOMP)`` (:func:`install_bpf`), and caches the
default one, which a fork server builds once (``sandbox.preload``).

The filter is built with libseccomp's NO_NEW_PRIVS attribute off, as runc does: whether no_new_privs
is set is the container's choice (``--security-opt no-new-privileges``); without it, loading a
filter needs CAP_SYS_ADMIN, so the caller loads it before dropping capabilities.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
from typing import Any

from backends.linux import libc
from backends.linux.seccomp_default import default_profile

__all__ = ["bpf_for", "cached_bpf", "compile_profile", "default_profile", "export_bpf", "install", "install_bpf", "load",
           "prepare", "resolve_profile"]

_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000, "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_SCMP_FLTATR_CTL_NNP = 3
_SCMP_FLTATR_CTL_OPTIMIZE = 8  # libseccomp >= 2.5; 2 = a binary tree over the syscall numbers
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_NR_SCMP_ERROR = -1
# Go GOARCH names used by profiles' includes/excludes "arches"
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "x86", "armv7l": "arm", "s390x": "s390x",
           "riscv64": "riscv64", "ppc64le": "ppc64le"}
_NATIVE_SCMP = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "s390x": "SCMP_ARCH_S390X",
                "riscv64": "SCMP_ARCH_RISCV64", "ppc64le": "SCMP_ARCH_PPC64LE"}


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


_lib: ctypes.CDLL | None = None


def _libseccomp() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise OSError(errno.ENOSYS, f"seccomp: cannot load libseccomp.so.2 ({e})") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        _lib = lib
    return _lib


def _kernel_version() -> tuple[int, ...]:
    parts = []
    for p in platform.release().split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _matches(cond: dict[str, Any] | None, caps: frozenset[str], arch: str, kernel: tuple[int, ...],
             include: bool) -> bool:
    """Does a rule's ``includes`` (include=True) hold, or its ``excludes`` (include=False) fire?"""
    if not cond:
        return include
    checks = []
    if cond.get("caps"):
        held = [c.upper().removeprefix("CAP_") in caps for c in cond["caps"]]
        checks.append(all(held) if include else any(held))
    if cond.get("arches"):
        checks.append(arch in cond["arches"])
    if cond.get("minKernel"):
        checks.append(kernel >= _version(cond["minKernel"]))
    if not checks:
        return include
    return all(checks) if include else any(checks)


def _action(name: str, errno_ret: int | None, default_errno: int) -> int:
    if name not in _ACTIONS:
        raise OSError(errno.EINVAL, f"seccomp: unsupported action {name}")
    value = _ACTIONS[name]
    if name == "SCMP_ACT_ERRNO":
        value |= (errno_ret if errno_ret is not None else default_errno) & 0xFFFF
    elif name == "SCMP_ACT_TRACE":
        value |= (errno_ret or 0) & 0xFFFF
    return value


def compile_profile(profile: dict[str, Any], caps: frozenset[str]) -> dict[str, Any]:
    """Reduce a Docker-format profile to the rules that apply to a container holding ``caps``.

    Returns ``{"default": action, "arches": [scmp arch names], "rules": [(action, name, args)]}``
    where ``args`` is a list of ``(index, op, value, value_two)``. Pure (no libseccomp).
    """
    machine = platform.machine()
    arch, kernel = _GOARCH.get(machine, machine), _kernel_version()
    default_errno = int(profile.get("defaultErrnoRet", errno.EPERM))
    default = _action(profile.get("defaultAction", "SCMP_ACT_ERRNO"), None, default_errno)
    native = _NATIVE_SCMP.get(machine)
    arches: list[str] = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if native is not None and entry.get("architecture") == native:
            arches = [native, *(entry.get("subArchitectures") or [])]
    rules: list[tuple[int, str, list[tuple[int, int, int, int]]]] = []
    for rule in profile.get("syscalls") or []:
        if not _matches(rule.get("includes"), caps, arch, kernel, True):
            continue
        if _matches(rule.get("excludes"), caps, arch, kernel, False):
            continue
        action = _action(rule["action"], rule.get("errnoRet"), default_errno)
        if action == default:
            continue  # libseccomp refuses rules equal to the default action
        args = [(int(a["index"]), _OPS[a["op"]], int(a["value"]), int(a.get("valueTwo", 0)))
                for a in rule.get("args") or []]
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        for name in names:
            rules.append((action, name, args))
    return {"default": default, "arches": arches, "rules": rules}


def resolve_profile(spec: str | None) -> dict[str, Any] | None:
    """``None`` → Docker's default, ``"unconfined"`` → None (no filter), else a JSON file's profile.

    Raises:
        FileNotFoundError: the profile file is missing; OSError(EINVAL): not valid JSON.
    """
    if spec == "unconfined":
        return None
    if spec is None or spec == "":
        return default_profile()
    try:
        with open(spec, "rb") as fh:
            return dict(json.load(fh))
    except ValueError as e:
        raise OSError(errno.EINVAL, f"seccomp profile {spec}: {e}", spec) from None


class Prepared:
    """A compiled profile with its syscalls resolved: installable without touching the filesystem
    (libseccomp is loaded while preparing, so this works after ``pivot_root``)."""

    def __init__(self, default: int, arches: list[int], rules: list[tuple[int, int, list[Any]]]) -> None:
        self.default, self.arches, self.rules = default, arches, rules


def prepare(profile: dict[str, Any], caps: frozenset[str]) -> Prepared:
    """Compile ``profile`` for a container holding ``caps`` and resolve names with libseccomp."""
    compiled = compile_profile(profile, caps)
    lib = _libseccomp()
    arches = [lib.seccomp_arch_resolve_name(n.removeprefix("SCMP_ARCH_").lower().encode())
              for n in compiled["arches"]]  # the native one answers EEXIST: fine
    rules = []
    for action, name, args in compiled["rules"]:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr != _NR_SCMP_ERROR:  # unknown to this libseccomp: Docker skips it too
            rules.append((action, nr, args))
    return Prepared(compiled["default"], [a for a in arches if a], rules)


def _build(lib: ctypes.CDLL, prepared: Prepared) -> int:
    ctx = lib.seccomp_init(prepared.default)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        _check(lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 0), "seccomp_attr_set(NNP)")
        # The same rules as a binary search instead of a chain of ~1000 compares: loading it
        # costs ~1.2 ms instead of ~2.1 ms (the kernel runs the filter for every syscall number
        # of every arch to build its allow-cache), and each syscall walks ~10 compares, not
        # hundreds. An older libseccomp refuses the attribute: then the chain it is.
        lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_OPTIMIZE, 2)
        for token in prepared.arches:
            ret = lib.seccomp_arch_add(ctx, token)
            if ret not in (0, -errno.EEXIST):
                _check(ret, f"seccomp_arch_add({token:#x})")
        for action, nr, args in prepared.rules:
            for group in _arg_groups(args):
                arr = (_ArgCmp * max(len(group), 1))(*[_ArgCmp(i, op, a, b) for i, op, a, b in group])
                ret = lib.seccomp_rule_add_array(ctx, action, nr, len(group), arr)
                if ret < 0 and ret != -errno.EEXIST:
                    _check(ret, f"seccomp rule for syscall {nr}")
    except BaseException:
        lib.seccomp_release(ctx)
        raise
    return int(ctx)


def export_bpf(prepared: Prepared) -> bytes:
    """The classic-BPF program libseccomp generates for ``prepared`` (``struct sock_filter[]``).

    Generating it costs ~30 ms for Docker's profile over three x86 ABIs; installing it ~1 ms.
    So the sandbox caches programs (see :func:`bpf_for`) and the zygote builds
    the default one once (``sandbox.preload``).
    """
    lib = _libseccomp()
    ctx = _build(lib, prepared)
    try:
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            _check(lib.seccomp_export_bpf(ctx, fd), "seccomp_export_bpf")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


_BPF_CACHE: dict[tuple[str, frozenset[str]], bytes] = {}


def cached_bpf(cache_key: str, caps: frozenset[str]) -> bytes | None:
    """The program :func:`bpf_for` cached under ``cache_key`` for ``caps``, if any."""
    return _BPF_CACHE.get((cache_key, caps))


def bpf_for(profile: dict[str, Any], caps: frozenset[str], cache_key: str | None = None) -> bytes:
    """The BPF program of ``profile`` for ``caps``; cached under ``cache_key`` when given."""
    key = (cache_key, caps) if cache_key is not None else None
    if key is not None and key in _BPF_CACHE:
        return _BPF_CACHE[key]
    bpf = export_bpf(prepare(profile, caps))
    if key is not None:
        _BPF_CACHE[key] = bpf
    return bpf


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_bpf(bpf: bytes) -> None:
    """Install a BPF program (from :func:`export_bpf`) on the calling thread, without libseccomp.

    Needs no_new_privs or CAP_SYS_ADMIN (``prctl(PR_SET_SECCOMP)`` answers EACCES otherwise).
    """
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.addressof(buf))
    try:
        libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog))
    except OSError as e:
        raise OSError(e.errno, f"install seccomp filter: {e.strerror}") from None


def install(prepared: Prepared) -> None:
    """Load the filter on the calling thread through libseccomp (needs no_new_privs or
    CAP_SYS_ADMIN)."""
    lib = _libseccomp()
    ctx = _build(lib, prepared)
    try:
        _check(lib.seccomp_load(ctx), "seccomp_load")
    finally:
        lib.seccomp_release(ctx)


def load(profile: dict[str, Any] | None, caps: frozenset[str]) -> None:
    """Compile ``profile`` for ``caps`` and install it on the calling thread (no-op for None)."""
    if profile is not None:
        install(prepare(profile, caps))


def _arg_groups(args: list[tuple[int, int, int, int]]) -> list[list[tuple[int, int, int, int]]]:
    """One rule for all conditions, unless two compare the same argument (libseccomp cannot AND
    those): then one rule per condition, as runc does."""
    if len({a[0] for a in args}) == len(args):
        return [args]
    return [[a] for a in args]


def _check(ret: int, what: str) -> None:
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
