"""Tokenizer of the sim shell: words (with quoting kept as parts), operators, redirections.

The lexer is pulled lazily by the parser, one token at a time, because ``$(…)`` is parsed by a
nested parser working on the same source: it stops at the matching ``)`` whatever the quoting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sim.programs.shell_ast import Arith, CmdSub, Lit, Param, Part, Seq, ShellSyntaxError, Word

META = set(" \t\n;&|<>()")
SPECIAL_PARAMS = set("?$!#@*-0123456789")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "word", "op", "redir", "eof"
    value: object = None  # Word for "word"; str for "op"; (fd, op) for "redir"


def _is_name_char(c: str) -> bool:
    return c.isalnum() or c == "_"


class Lexer:
    """Tokens of ``src`` from ``pos``; ``subparse(src, pos) -> (Seq, end)`` parses ``$(…)``."""

    def __init__(self, src: str, pos: int, subparse: Callable[[str, int], tuple[Seq, int]]) -> None:
        self.src = src
        self.pos = pos
        self.subparse = subparse

    def _peekc(self, off: int = 0) -> str:
        i = self.pos + off
        return self.src[i] if i < len(self.src) else ""

    def next_token(self) -> Token:
        src = self.src
        while True:
            c = self._peekc()
            if c in (" ", "\t"):
                self.pos += 1
            elif c == "\\" and self._peekc(1) == "\n":
                self.pos += 2
            elif c == "#":
                while self.pos < len(src) and src[self.pos] != "\n":
                    self.pos += 1
            else:
                break
        if c == "":
            return Token("eof")
        if c == "\n":
            self.pos += 1
            return Token("op", "\n")
        for op in ("&&", "||", ";;", ";", "&", "|", "(", ")"):
            if src.startswith(op, self.pos):
                self.pos += len(op)
                return Token("op", op)
        if c in "<>":
            return self._redir(-1)
        # an IO number: digits immediately followed by < or >
        i = self.pos
        while i < len(src) and src[i].isdigit():
            i += 1
        if i > self.pos and i < len(src) and src[i] in "<>":
            fd = int(src[self.pos:i])
            self.pos = i
            return self._redir(fd)
        return Token("word", self._word())

    def _redir(self, fd: int) -> Token:
        src = self.src
        for op in (">>", ">&", "<&", ">|", "<<", ">", "<"):
            if src.startswith(op, self.pos):
                self.pos += len(op)
                if op == "<<":
                    raise ShellSyntaxError("syntax error: here-documents are not supported")
                if op == ">|":
                    op = ">"
                if fd < 0:
                    fd = 0 if op.startswith("<") else 1
                return Token("redir", (fd, op))
        raise AssertionError("unreachable")

    def _word(self) -> Word:
        parts: list[Part] = []
        buf: list[str] = []

        def flush(quoted: bool = False) -> None:
            if buf:
                parts.append(Lit("".join(buf), quoted))
                buf.clear()

        src = self.src
        while self.pos < len(src):
            c = src[self.pos]
            if c in META:
                break
            if c == "'":
                end = src.find("'", self.pos + 1)
                if end < 0:
                    raise ShellSyntaxError("syntax error: unterminated quoted string")
                flush()
                parts.append(Lit(src[self.pos + 1:end], True))
                self.pos = end + 1
            elif c == '"':
                flush()
                self.pos += 1
                parts.extend(self._dquoted())
            elif c == "\\":
                flush()
                if self.pos + 1 < len(src):
                    parts.append(Lit(src[self.pos + 1], True))
                self.pos += 2
            elif c == "$" or c == "`":
                part = self._dollar(False)
                if part is None:
                    buf.append("$")
                else:
                    flush()
                    parts.append(part)
            else:
                buf.append(c)
                self.pos += 1
        flush()
        return Word(tuple(parts))

    def _dquoted(self) -> list[Part]:
        """Contents of a double-quoted string; ``pos`` is after the opening quote."""
        parts: list[Part] = []
        buf: list[str] = []
        src = self.src
        while True:
            if self.pos >= len(src):
                raise ShellSyntaxError("syntax error: unterminated quoted string")
            c = src[self.pos]
            if c == '"':
                self.pos += 1
                break
            if c == "\\" and self.pos + 1 < len(src) and src[self.pos + 1] in '$`"\\\n':
                if src[self.pos + 1] != "\n":
                    buf.append(src[self.pos + 1])
                self.pos += 2
            elif c in "$`":
                part = self._dollar(True)
                if part is None:
                    buf.append("$")
                else:
                    if buf:
                        parts.append(Lit("".join(buf), True))
                        buf.clear()
                    parts.append(part)
            else:
                buf.append(c)
                self.pos += 1
        if buf or not parts:
            parts.append(Lit("".join(buf), True))
        return parts

    def _dollar(self, quoted: bool) -> Part | None:
        """A ``$`` or backtick expansion at ``pos``; None for a literal ``$``."""
        src = self.src
        if src[self.pos] == "`":
            end = self.pos + 1
            inner: list[str] = []
            while end < len(src) and src[end] != "`":
                if src[end] == "\\" and end + 1 < len(src) and src[end + 1] in "`$\\":
                    end += 1
                inner.append(src[end])
                end += 1
            if end >= len(src):
                raise ShellSyntaxError("syntax error: unterminated quoted string")
            self.pos = end + 1
            body, _ = self.subparse("".join(inner) + ")", 0)
            return CmdSub(body, quoted)
        nxt = self._peekc(1)
        if src.startswith("$((", self.pos):
            depth, i = 0, self.pos + 3
            while i < len(src):
                if src[i] == "(":
                    depth += 1
                elif src[i] == ")":
                    if depth == 0:
                        break
                    depth -= 1
                i += 1
            if not src.startswith("))", i):
                raise ShellSyntaxError("syntax error: missing '))'")
            inner_lex = Lexer(src[self.pos + 3:i] + '"', 0, self.subparse)
            self.pos = i + 2
            return Arith(Word(tuple(inner_lex._dquoted())), quoted)
        if nxt == "(":
            body, end = self.subparse(src, self.pos + 2)
            self.pos = end
            return CmdSub(body, quoted)
        if nxt == "{":
            return self._braced(quoted)
        if nxt and nxt in SPECIAL_PARAMS:
            self.pos += 2
            return Param(nxt, quoted)
        if nxt and (nxt.isalpha() or nxt == "_"):
            i = self.pos + 1
            while i < len(src) and _is_name_char(src[i]):
                i += 1
            name = src[self.pos + 1:i]
            self.pos = i
            return Param(name, quoted)
        self.pos += 1
        return None

    def _braced(self, quoted: bool) -> Param:
        src = self.src
        i = self.pos + 2
        length = src.startswith("#", i) and i + 1 < len(src) and src[i + 1] != "}"
        if length:
            i += 1
        start = i
        if i < len(src) and src[i] in SPECIAL_PARAMS:
            i += 1
        while i < len(src) and _is_name_char(src[i]):
            i += 1
        name = src[start:i]
        if not name:
            raise ShellSyntaxError("syntax error: bad substitution")
        if length:
            if not src.startswith("}", i):
                raise ShellSyntaxError("syntax error: bad substitution")
            self.pos = i + 1
            return Param(name, quoted, "#len")
        for op in (":-", ":=", ":+", ":?", "-", "=", "+", "?", "}"):
            if src.startswith(op, i):
                break
        else:
            raise ShellSyntaxError("syntax error: bad substitution")
        if op == "}":
            self.pos = i + 1
            return Param(name, quoted)
        # the argument: up to the matching brace, expanded like a double-quoted string
        depth, j = 0, i + len(op)
        while j < len(src):
            if src[j] == "{":
                depth += 1
            elif src[j] == "}":
                if depth == 0:
                    break
                depth -= 1
            j += 1
        if j >= len(src):
            raise ShellSyntaxError("syntax error: bad substitution")
        text = src[i + len(op):j]
        if not quoted and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]
        arg_lex = Lexer(text + '"', 0, self.subparse)
        self.pos = j + 1
        return Param(name, quoted, op, Word(tuple(arg_lex._dquoted())))
