"""Docker's ``--user`` syntax resolved against a rootfs's /etc/passwd and /etc/group."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Passwd:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    gid: int
    members: tuple[str, ...]


def _lines(view: Any, path: str) -> list[list[str]]:
    try:
        text = view.read(path).decode("utf-8", "replace")
    except OSError:
        return []
    return [ln.split(":") for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def passwd(view: Any) -> list[Passwd]:
    out = []
    for f in _lines(view, "/etc/passwd"):
        if len(f) >= 4 and f[2].isdigit() and f[3].isdigit():
            out.append(Passwd(f[0], int(f[2]), int(f[3]), f[5] if len(f) > 5 else "/"))
    return out


def groups(view: Any) -> list[Group]:
    out = []
    for f in _lines(view, "/etc/group"):
        if len(f) >= 3 and f[2].isdigit():
            members = tuple(m for m in (f[3].split(",") if len(f) > 3 else []) if m)
            out.append(Group(f[0], int(f[2]), members))
    return out


def resolve_user(view: Any, user: str) -> tuple[int, int, tuple[int, ...]]:
    """``(uid, gid, supplementary gids)`` for ``""``, ``uid``, ``uid:gid``, ``name``,
    ``name:group``. Raises ``OSError(EINVAL)`` naming an unknown user or group."""
    spec_user, _, spec_group = user.partition(":")
    users = passwd(view)
    entry: Passwd | None = None
    if spec_user == "":
        uid = 0
        entry = next((u for u in users if u.uid == 0), None)
    elif spec_user.isdigit():
        uid = int(spec_user)
        entry = next((u for u in users if u.uid == uid), None)
    else:
        entry = next((u for u in users if u.name == spec_user), None)
        if entry is None:
            raise OSError(errno.EINVAL, f"unable to find user {spec_user}: no matching entries in "
                                        "passwd file")
        uid = entry.uid
    gid = entry.gid if entry is not None else 0
    all_groups = groups(view)
    if spec_group:
        if spec_group.isdigit():
            gid = int(spec_group)
        else:
            grp = next((g for g in all_groups if g.name == spec_group), None)
            if grp is None:
                raise OSError(errno.EINVAL, f"unable to find group {spec_group}: no matching "
                                            "entries in group file")
            gid = grp.gid
    extra: list[int] = []
    if entry is not None and not spec_group:
        extra = [g.gid for g in all_groups if entry.name in g.members and g.gid != gid]
    return uid, gid, tuple(dict.fromkeys([gid, *extra]))


def user_name(view: Any, uid: int) -> str | None:
    return next((u.name for u in passwd(view) if u.uid == uid), None)


def group_name(view: Any, gid: int) -> str | None:
    return next((g.name for g in groups(view) if g.gid == gid), None)
