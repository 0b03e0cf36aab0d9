"""``test`` / ``[`` expression evaluation (POSIX rules for 0-4 arguments, then -a/-o)."""

from __future__ import annotations

from sim.programs.base import Ctx

_INT_OPS = {"-eq": int.__eq__, "-ne": int.__ne__, "-lt": int.__lt__, "-le": int.__le__,
            "-gt": int.__gt__, "-ge": int.__ge__}
_STR_OPS = {"=": str.__eq__, "==": str.__eq__, "!=": str.__ne__, "<": str.__lt__, ">": str.__gt__}
_UNARY = set("-e -f -d -h -L -r -w -x -s -n -z -b -c -p -S -t".split())


def _int(s: str) -> int:
    try:
        return int(s.strip())
    except ValueError:
        raise ValueError(f"{s}: bad number") from None


def _unary(ctx: Ctx, op: str, arg: str) -> bool:
    if op == "-n":
        return arg != ""
    if op == "-z":
        return arg == ""
    if op == "-t":
        return False
    view = ctx.view
    path = ctx.path(arg)
    try:
        st = view.stat(path, follow=op not in ("-h", "-L"))
    except OSError:
        return False
    kinds = {"-f": "file", "-d": "dir", "-h": "symlink", "-L": "symlink", "-b": "block",
             "-c": "char", "-p": "fifo"}
    if op in kinds:
        return st.kind == kinds[op]
    if op == "-s":
        return st.size > 0
    if op == "-x":
        return bool(st.mode & 0o111) or st.kind == "dir"
    return True  # -e -r -w (everything runs with root's permissions here)


def evaluate(ctx: Ctx, args: list[str]) -> bool:
    """Raises ``ValueError`` with busybox's message for a malformed expression."""
    for i, a in enumerate(args):
        if a in ("-o", "-a") and 0 < i < len(args) - 1:
            left, right = evaluate(ctx, args[:i]), args[i + 1:]
            if a == "-o":
                return left or evaluate(ctx, right)
            return left and evaluate(ctx, right)
    n = len(args)
    if n == 0:
        return False
    if n == 1:
        return args[0] != ""
    if args[0] == "!":
        return not evaluate(ctx, args[1:])
    if n == 2:
        if args[0] in _UNARY:
            return _unary(ctx, args[0], args[1])
        raise ValueError(f"{args[0]}: unary operator expected")
    if n == 3:
        a, op, b = args
        if op in _INT_OPS:
            return bool(_INT_OPS[op](_int(a), _int(b)))
        if op in _STR_OPS:
            return bool(_STR_OPS[op](a, b))
        if a == "(" and b == ")":
            return op != ""
        raise ValueError(f"{op}: binary operator expected")
    if args[0] == "(" and args[-1] == ")":
        return evaluate(ctx, args[1:-1])
    raise ValueError(f"{args[-1]}: argument expected" if n == 2 else "syntax error")
