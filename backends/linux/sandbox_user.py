"""User, working directory and executable resolution inside a container's root.

Every path is resolved *inside* the root (``openat2(RESOLVE_IN_ROOT)``), so an image whose
/etc/passwd is a symlink to ``/../../etc/shadow`` reads its own file, never the host's. Inside
the container (after ``pivot_root``) the root is simply ``"/"``.
"""

from __future__ import annotations

import errno
import os
import stat

from backends.linux import libc

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def read_in_root(root: str, path: str, limit: int = 1 << 20) -> bytes:
    """The content of ``path`` resolved inside ``root`` (at most ``limit`` bytes)."""
    if root == "/":
        with open(path, "rb") as fh:
            return fh.read(limit)
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = libc.openat2(rootfd, path, os.O_RDONLY)
    finally:
        os.close(rootfd)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit)


def _entries(root: str, path: str) -> list[list[str]]:
    try:
        text = read_in_root(root, path).decode("utf-8", "replace")
    except OSError:
        return []
    return [ln.split(":") for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def resolve_user(rootfs_path: str, user: str) -> tuple[int, int, tuple[int, ...], str]:
    """Docker's ``--user`` (``""``, ``uid``, ``uid:gid``, ``name``, ``name:group``) → ids and home.

    Resolved against ``rootfs_path``'s /etc/passwd and /etc/group. Returns ``(uid, gid, groups,
    home)`` where ``groups`` starts with ``gid`` and adds the groups listing the user as a member
    (none when a group was given explicitly); ``home`` is the passwd entry's or ``"/"``.

    Raises:
        OSError(EINVAL): unknown user name or group name (the message says which).
    """
    spec_user, _, spec_group = user.partition(":")
    users = [(f[0], int(f[2]), int(f[3]), f[5] if len(f) > 5 and f[5] else "/")
             for f in _entries(rootfs_path, "/etc/passwd")
             if len(f) >= 4 and f[2].isdigit() and f[3].isdigit()]
    if spec_user == "":
        uid = 0
        entry = next((u for u in users if u[1] == 0), None)
    elif spec_user.isdigit():
        uid = int(spec_user)
        entry = next((u for u in users if u[1] == uid), None)
    else:
        entry = next((u for u in users if u[0] == spec_user), None)
        if entry is None:
            raise OSError(errno.EINVAL, f"unable to find user {spec_user}: no matching entries in "
                                        "passwd file")
        uid = entry[1]
    gid = entry[2] if entry is not None else 0
    groups = [(f[0], int(f[2]), [m for m in (f[3].split(",") if len(f) > 3 else []) if m])
              for f in _entries(rootfs_path, "/etc/group") if len(f) >= 3 and f[2].isdigit()]
    if spec_group:
        if spec_group.isdigit():
            gid = int(spec_group)
        else:
            found = next((g for g in groups if g[0] == spec_group), None)
            if found is None:
                raise OSError(errno.EINVAL, f"unable to find group {spec_group}: no matching "
                                            "entries in group file")
            gid = found[1]
    extra: list[int] = []
    if entry is not None and not spec_group:
        extra = [g[1] for g in groups if entry[0] in g[2] and g[1] != gid]
    home = entry[3] if entry is not None else "/"
    return uid, gid, tuple(dict.fromkeys([gid, *extra])), home


def env_get(env: list[str] | tuple[str, ...], key: str) -> str | None:
    prefix = key + "="
    for item in reversed(env):
        if item.startswith(prefix):
            return item[len(prefix):]
    return None


def check_cwd(cwd: str) -> None:
    """Fail like runc when the working directory is missing or not a directory.

    Raises:
        FileNotFoundError(filename=cwd); NotADirectoryError(filename=cwd).
    """
    try:
        st = os.stat(cwd)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"working directory {cwd} does not exist", cwd) from None
    except OSError as e:
        raise OSError(e.errno, f"working directory {cwd}: {e.strerror}", cwd) from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, f"working directory {cwd} is not a directory", cwd)


def look_path(name: str, env: list[str] | tuple[str, ...], cwd: str) -> str:
    """The file ``execvp`` would run for ``name`` (``PATH`` from ``env``, else Docker's default).

    Call it inside the container, after switching to the container's user.

    Raises:
        FileNotFoundError(filename=name): not found; PermissionError(filename=path): found only
        files that are not executable (or directories).
    """
    if not name:
        raise FileNotFoundError(errno.ENOENT, "exec: empty command", name)
    if "/" in name:
        candidates = [name if name.startswith("/") else os.path.join(cwd, name)]
    else:
        path = env_get(env, "PATH")
        dirs = (path if path is not None else DEFAULT_PATH).split(":")
        candidates = [os.path.join(d or cwd, name) for d in dirs]
    denied: str | None = None
    for cand in candidates:
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(cand, os.X_OK):
            return cand
        denied = denied or cand
    if denied is not None:
        raise PermissionError(errno.EACCES, f"exec {name}: permission denied", denied)
    if "/" in name:
        raise FileNotFoundError(errno.ENOENT, f"exec {name}: no such file or directory", name)
    raise FileNotFoundError(errno.ENOENT, f'exec: "{name}": executable file not found in $PATH', name)
