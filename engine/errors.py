"""The engine's error tree. One category per class; the HTTP status lives here and nowhere else.

::

    EngineError                 kind            HTTP
    ├── InvalidArgument         invalid         400   bad ref, bad signal, bad config
    │   └── AmbiguousReference  invalid         400   an id prefix matching several objects
    ├── NotFound                not_found       404   no such container / image / snapshot
    ├── AlreadyExists           already_exists  409   name in use, tag exists
    ├── Conflict                conflict        409   container running / not running, image in use
    ├── PermissionDenied        forbidden       403
    ├── Unavailable             unavailable     503   registry unreachable, backend down
    ├── NotImplemented          not_implemented 501   the backend lacks a feature
    └── Internal                internal        500   unexpected kernel error, data loss

Messages follow crun's "what, on what" style, e.g. ``cannot start container 3f2a…: mount
rootfs: Device or resource busy``. The API maps ``kind``/``http_status`` to the wire in one
middleware and the client maps them back, so ``pytest.raises(NotFound)`` holds in-process and
over HTTP alike.
"""

from __future__ import annotations

import errno as _errno


class EngineError(Exception):
    kind = "internal"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(EngineError):
    kind = "invalid"
    http_status = 400


class AmbiguousReference(InvalidArgument):
    pass


class NotFound(EngineError):
    kind = "not_found"
    http_status = 404


class AlreadyExists(EngineError):
    kind = "already_exists"
    http_status = 409


class Conflict(EngineError):
    kind = "conflict"
    http_status = 409


class PermissionDenied(EngineError):
    kind = "forbidden"
    http_status = 403


class Unavailable(EngineError):
    kind = "unavailable"
    http_status = 503


class NotImplemented_(EngineError):
    kind = "not_implemented"
    http_status = 501


NotImplementedFeature = NotImplemented_


class Internal(EngineError):
    kind = "internal"
    http_status = 500


BY_KIND: dict[str, type[EngineError]] = {
    cls.kind: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, Conflict, PermissionDenied, Unavailable,
                NotImplemented_, Internal)
}


def from_kind(kind: str, message: str) -> EngineError:
    """Rebuild an error received over the wire (the client side of the round trip)."""
    return BY_KIND.get(kind, Internal)(message)


_ERRNO_CLASS: dict[int, type[EngineError]] = {
    _errno.ENOENT: NotFound,
    _errno.ESRCH: NotFound,
    _errno.EEXIST: AlreadyExists,
    _errno.EBUSY: Conflict,
    _errno.EINVAL: InvalidArgument,
    _errno.EPERM: PermissionDenied,
    _errno.EACCES: PermissionDenied,
    _errno.ENOSPC: Unavailable,
    _errno.EFBIG: InvalidArgument,
    _errno.ENOEXEC: InvalidArgument,
    _errno.ENOSYS: NotImplemented_,
    _errno.EOPNOTSUPP: NotImplemented_,
}


def from_os_error(what: str, exc: OSError, default: type[EngineError] = Internal) -> EngineError:
    """Translate a Kernel ``OSError`` into an ``EngineError`` naming what was being done.

    ``what`` reads like ``"cannot start container 3f2a…: mount rootfs"``.
    """
    cls = _ERRNO_CLASS.get(exc.errno or 0, default)
    detail = exc.strerror or str(exc)
    if exc.filename and str(exc.filename) not in detail:
        detail = f"{detail}: {exc.filename}"
    err = cls(f"{what}: {detail}")
    err.__cause__ = exc
    return err
