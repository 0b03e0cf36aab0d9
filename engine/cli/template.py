"""A small Go ``text/template`` for ``--format`` (the subset docker users write).

Supported: ``{{.A.B}}``, ``{{.}}``, ``{{json .X}}``, ``{{index .X "k"}}``, pipelines
(``{{.X | json}}``), ``{{range .X}}…{{end}}`` (``.`` is the element), ``{{if .X}}…{{else}}…{{end}}``,
``{{with .X}}…{{end}}``, the functions docker adds (``join``, ``split``, ``upper``, ``lower``,
``title``, ``truncate``, ``pad``, ``println``, ``printf`` with %s/%d/%v) and ``len``.
Values print as Go prints them (``<no value>``, ``map[k:v]``, ``[a b]``, ``true``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)


class TemplateError(Exception):
    pass


def go_str(v: Any) -> str:
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v)) if abs(v) < 1e6 else f"{v:e}".replace("e+0", "e+0")
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_str(x)}" for k, x in sorted(v.items())) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    return str(v)


def _json(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k)
        elif isinstance(v, (list, tuple)):
            v = v[int(k)]
        else:
            return None
    return v


def _printf(fmt: str, *args: Any) -> str:
    out, i = [], 0
    parts = re.split(r"(%[-0-9.]*[sdvq%])", fmt)
    for p in parts:
        if p == "%%":
            out.append("%")
        elif re.fullmatch(r"%[-0-9.]*[sdvq]", p):
            a = args[i] if i < len(args) else None
            i += 1
            out.append(json.dumps(str(a)) if p.endswith("q") else ("%" + p[1:-1] + "s") % go_str(a))
        else:
            out.append(p)
    return "".join(out)


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json, "index": _index, "len": lambda v: len(v or ()),
    "join": lambda v, sep: sep.join(go_str(x) for x in (v or ())), "split": lambda s, sep: s.split(sep),
    "upper": lambda s: go_str(s).upper(), "lower": lambda s: go_str(s).lower(), "title": lambda s: go_str(s).title(),
    "truncate": lambda s, n: go_str(s)[: int(n)], "pad": lambda s, a, b: " " * int(a) + go_str(s) + " " * int(b),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n", "print": lambda *a: "".join(go_str(x) for x in a),
    "printf": _printf, "eq": lambda a, *b: any(a == x for x in b), "ne": lambda a, b: a != b,
    "not": lambda a: not _truthy(a), "and": lambda *a: all(_truthy(x) for x in a),
    "or": lambda *a: next((x for x in a if _truthy(x)), a[-1] if a else None),
}


def _truthy(v: Any) -> bool:
    return bool(v) and v != "0001-01-01T00:00:00Z"


class Template:
    """Parse once, render many: ``Template("{{.ID}}\\t{{.Status}}").render(row)``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tree = self._parse(text)

    def _parse(self, text: str) -> list[Any]:
        root: list[Any] = []
        stack: list[tuple[list[Any], Any]] = [(root, None)]
        pos = 0
        for m in _ACTION.finditer(text):
            lead = text[pos:m.start()]
            if "{{" in lead:
                raise TemplateError("unclosed action")
            if m.group(0).startswith("{{-"):
                lead = lead.rstrip()
            if lead:
                stack[-1][0].append(("text", lead))
            pos = m.end()
            body = m.group(1)
            head = body.split(None, 1)[0] if body else ""
            if head in ("range", "if", "with"):
                node: list[Any] = [head, body[len(head):].strip(), [], []]
                stack[-1][0].append(node)
                stack.append((node[2], node))
            elif head == "else":
                if len(stack) == 1:
                    raise TemplateError("unexpected {{else}}")
                stack[-1] = (stack[-1][1][3], stack[-1][1])
            elif head == "end":
                if len(stack) == 1:
                    raise TemplateError("unexpected {{end}}")
                stack.pop()
            elif body.startswith("/*"):
                continue
            else:
                stack[-1][0].append(("expr", body))
        if len(stack) != 1:
            raise TemplateError("unexpected EOF: missing {{end}}")
        tail = text[pos:]
        if "{{" in tail:
            raise TemplateError("unclosed action")
        if tail:
            root.append(("text", tail))
        return root

    def render(self, data: Any) -> str:
        out: list[str] = []
        self._run(self.tree, data, out)
        return "".join(out)

    def _run(self, nodes: list[Any], dot: Any, out: list[str]) -> None:
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "expr":
                out.append(go_str(self._pipeline(node[1], dot)))
            else:
                kind, expr, body, other = node
                val = self._pipeline(expr, dot)
                if kind == "range":
                    items = list(val.values()) if isinstance(val, dict) else list(val or ())
                    for item in items:
                        self._run(body, item, out)
                    if not items:
                        self._run(other, dot, out)
                elif _truthy(val):
                    self._run(body, val if kind == "with" else dot, out)
                else:
                    self._run(other, dot, out)

    def _pipeline(self, expr: str, dot: Any) -> Any:
        val: Any = _NOARG
        for cmd in _split_pipe(expr):
            val = self._command(cmd, dot, val)
        return val

    def _command(self, cmd: str, dot: Any, piped: Any) -> Any:
        try:
            words = shlex.split(cmd, posix=False)
        except ValueError as e:
            raise TemplateError(f"bad action {cmd!r}: {e}") from None
        if not words:
            raise TemplateError("empty command")
        first, rest = words[0], [self._term(w, dot) for w in words[1:]]
        if piped is not _NOARG:
            rest.append(piped)
        if first in FUNCS:
            try:
                return FUNCS[first](*rest)
            except (TypeError, ValueError, IndexError, KeyError) as e:
                raise TemplateError(f"error calling {first}: {e}") from None
        val = self._term(first, dot)
        if callable(val):
            return val(*rest)
        if rest:
            raise TemplateError(f"{first} is not a function")
        return val

    def _term(self, word: str, dot: Any) -> Any:
        if word == "." or word == "$":
            return dot
        if word.startswith("."):
            v = dot
            for part in word[1:].split("."):
                v = _field(v, part)
            return v
        if word[:1] in "\"'`":
            return word[1:-1].encode().decode("unicode_escape") if word[0] == '"' else word[1:-1]
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word in ("true", "false"):
            return word == "true"
        if word == "nil":
            return None
        raise TemplateError(f'function "{word}" not defined')


class _NoArg:
    pass


_NOARG = _NoArg()


def _field(v: Any, name: str) -> Any:
    if isinstance(v, dict):
        if name in v:
            return v[name]
        raise TemplateError(f"can't evaluate field {name}")
    if v is None:
        return None
    if hasattr(v, name):
        return getattr(v, name)
    raise TemplateError(f"can't evaluate field {name} in type {type(v).__name__}")


def _split_pipe(expr: str) -> list[str]:
    parts, cur, quote = [], [], ""
    for ch in expr:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
            cur.append(ch)
        elif ch == "|":
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]
