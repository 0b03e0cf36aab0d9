"""Word expansion for the sim shell: parameters, command substitution, arithmetic, field
splitting (IFS whitespace only) and pathname globbing in the sandbox view."""

from __future__ import annotations

import ast
import fnmatch
import posixpath
import re
from collections.abc import Awaitable, Callable
from typing import Any

from sim.programs.shell_ast import Arith, CmdSub, Lit, Param, Part, Seq, Word

_NAME_IN_EXPR = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\b")


class ExpansionError(Exception):
    """``${x:?msg}`` on an unset x, or a bad arithmetic expression: the shell reports it."""


class Expander:
    """Expands words against ``lookup`` (parameter -> value or None), ``assign`` and
    ``substitute`` (runs a command substitution, returns its output)."""

    def __init__(self, lookup: Callable[[str], str | None], assign: Callable[[str, str], None],
                 substitute: Callable[[Seq], Awaitable[str]], positional: Callable[[], list[str]],
                 view: Any = None, cwd: Callable[[], str] = lambda: "/") -> None:
        self.lookup = lookup
        self.assign = assign
        self.substitute = substitute
        self.positional = positional
        self.view = view
        self.cwd = cwd

    async def fields(self, words: tuple[Word, ...]) -> list[str]:
        out: list[str] = []
        for w in words:
            out.extend(await self.word_fields(w))
        return out

    async def word_fields(self, word: Word) -> list[str]:
        fields: list[str] = []
        cur: str | None = None
        globbable = False
        for part in word.parts:
            if isinstance(part, Lit):
                cur = (cur or "") + part.text
                globbable |= not part.quoted and any(c in part.text for c in "*?[")
                continue
            if isinstance(part, Param) and part.name == "@" and part.quoted and not part.op:
                args = self.positional()
                if args:
                    cur = (cur or "") + args[0]
                    for a in args[1:]:
                        fields.append(cur)
                        cur = a
                continue
            value = await self.part(part)
            if part.quoted:
                cur = (cur or "") + value
                continue
            pieces = value.split()
            if value[:1].isspace() and cur is not None:
                fields.append(cur)
                cur = None
            if pieces:
                cur = (cur or "") + pieces[0]
                for p in pieces[1:]:
                    fields.append(cur)
                    cur = p
                if value[-1:].isspace():
                    fields.append(cur)
                    cur = None
        if cur is not None:
            fields.append(cur)
        if globbable and self.view is not None:
            return [m for f in fields for m in (self.glob(f) or [f])]
        return fields

    async def string(self, word: Word) -> str:
        """The word as one string (no field splitting): assignments, redirection targets."""
        out = []
        for part in word.parts:
            out.append(part.text if isinstance(part, Lit) else await self.part(part))
        return "".join(out)

    async def part(self, part: Part) -> str:
        if isinstance(part, Lit):
            return part.text
        if isinstance(part, CmdSub):
            return (await self.substitute(part.body)).rstrip("\n")
        if isinstance(part, Arith):
            return str(arith(await self.string(part.expr), self.lookup, self.assign))
        return await self.param(part)

    async def param(self, p: Param) -> str:
        value = self.lookup(p.name)
        if p.op == "#len":
            return str(len(value or ""))
        if not p.op:
            return value or ""
        empty = value is None or (value == "" and p.op.startswith(":"))
        op = p.op.lstrip(":")
        arg = await self.string(p.arg) if p.arg is not None else ""
        if op == "-":
            return arg if empty else (value or "")
        if op == "=":
            if empty:
                self.assign(p.name, arg)
                return arg
            return value or ""
        if op == "+":
            return "" if empty else arg
        if op == "?":
            if empty:
                raise ExpansionError(f"{p.name}: {arg or 'parameter not set'}")
            return value or ""
        return value or ""

    def glob(self, pattern: str) -> list[str]:
        """Matches of ``pattern`` in the view, sorted; [] when none (the word stays as is)."""
        absolute = pattern.startswith("/")
        base = "/" if absolute else self.cwd()
        segs = [s for s in pattern.split("/") if s]
        found = [""]
        for i, seg in enumerate(segs):
            nxt = []
            for prefix in found:
                d = posixpath.join(base, prefix) if prefix else base
                if not any(c in seg for c in "*?["):
                    cand = posixpath.join(prefix, seg) if prefix else seg
                    if self.view.exists(posixpath.join(base, cand)):
                        nxt.append(cand)
                    continue
                try:
                    names = self.view.listdir(d)
                except OSError:
                    continue
                for n in names:
                    if fnmatch.fnmatchcase(n, seg) and (seg.startswith(".") or not n.startswith(".")):
                        nxt.append(posixpath.join(prefix, n) if prefix else n)
            found = nxt
        return sorted(("/" + f) if absolute else f for f in found)


def arith(expr: str, lookup: Callable[[str], str | None],
          assign: Callable[[str, str], None] | None = None) -> int:
    """Evaluate a shell arithmetic expression (C integer semantics). ``ExpansionError``."""
    text = expr.strip()
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*(\+|-|\*|/|%)?=\s*([^=].*)", text)
    if m and assign is not None:
        rhs = arith(m.group(3), lookup)
        if m.group(2):
            rhs = _binop(m.group(2), arith(m.group(1), lookup), rhs)
        assign(m.group(1), str(rhs))
        return rhs
    py = _NAME_IN_EXPR.sub(lambda mm: f"__v_{mm.group(1)}", text)
    py = py.replace("&&", " and ").replace("||", " or ")
    py = re.sub(r"!(?!=)", " not ", py)
    try:
        tree = ast.parse(py.strip() or "0", mode="eval")
    except SyntaxError:
        raise ExpansionError(f"arithmetic syntax error: {expr}") from None

    def ev(n: ast.AST) -> int:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.Name) and n.id.startswith("__v_"):
            raw = (lookup(n.id[4:]) or "0").strip() or "0"
            try:
                return int(raw, 0)
            except ValueError:
                return arith(raw, lookup)
        if isinstance(n, ast.UnaryOp):
            v = ev(n.operand)
            ops = {ast.USub: -v, ast.UAdd: v, ast.Not: int(not v), ast.Invert: ~v}
            return int(ops[type(n.op)])
        if isinstance(n, ast.BoolOp):
            vals = [ev(x) for x in n.values]
            return int(all(vals)) if isinstance(n.op, ast.And) else int(any(vals))
        if isinstance(n, ast.Compare) and len(n.ops) == 1:
            a, b = ev(n.left), ev(n.comparators[0])
            cmp = {ast.Lt: a < b, ast.LtE: a <= b, ast.Gt: a > b, ast.GtE: a >= b,
                   ast.Eq: a == b, ast.NotEq: a != b}
            return int(cmp[type(n.ops[0])])
        if isinstance(n, ast.BinOp):
            sym = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "/",
                   ast.Mod: "%", ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&",
                   ast.BitOr: "|", ast.BitXor: "^", ast.Pow: "**"}.get(type(n.op))
            if sym is not None:
                return _binop(sym, ev(n.left), ev(n.right))
        raise ExpansionError(f"arithmetic syntax error: {expr}")

    return ev(tree)


def _binop(op: str, a: int, b: int) -> int:
    if op in ("/", "%") and b == 0:
        raise ExpansionError("divide by zero")
    if op == "/":
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    if op == "%":
        return a - b * _binop("/", a, b)
    if op in ("<<", ">>", "**") and b < 0:
        raise ExpansionError("arithmetic syntax error: negative operand")
    funcs = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "<<": int.__lshift__,
             ">>": int.__rshift__, "&": int.__and__, "|": int.__or__, "^": int.__xor__,
             "**": int.__pow__}
    return int(funcs[op](a, b))
