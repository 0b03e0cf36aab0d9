"""The AST of the sim's small POSIX shell (``sh -c``), produced by ``shell_parse``.

Words keep their quoting so expansion can do field splitting only on unquoted parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


class ShellSyntaxError(Exception):
    """A parse error; the message is busybox's (``syntax error: unexpected "done"``)."""


@dataclass(frozen=True, slots=True)
class Lit:
    text: str
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Param:
    """``$name`` / ``${name}`` / ``${name:-word}`` (``op`` is "", ":-", "-", ":=", "=", ":+",
    "+", "#len")."""

    name: str
    quoted: bool = False
    op: str = ""
    arg: Word | None = None


@dataclass(frozen=True, slots=True)
class CmdSub:
    """``$(…)`` or backticks; ``body`` is the parsed inner script."""

    body: Seq
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Arith:
    """``$((expr))``; ``expr`` is expanded (parameters) before evaluation."""

    expr: Word
    quoted: bool = False


Part = Union[Lit, Param, CmdSub, Arith]


@dataclass(frozen=True, slots=True)
class Word:
    parts: tuple[Part, ...]

    def plain(self) -> str | None:
        """The text if the word is a single unquoted literal (reserved-word candidates)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Lit) and not self.parts[0].quoted:
            return self.parts[0].text
        return None


@dataclass(frozen=True, slots=True)
class Redir:
    """``fd op target``: op is ">", ">>", "<", ">&" or "<&" (target is a word: a file or fd)."""

    fd: int
    op: str
    target: Word


@dataclass(frozen=True, slots=True)
class Simple:
    assigns: tuple[tuple[str, Word], ...]
    words: tuple[Word, ...]
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class If:
    branches: tuple[tuple[Seq, Seq], ...]  # (condition, body)
    else_body: Seq | None
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class While:
    cond: Seq
    body: Seq
    until: bool = False
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class For:
    var: str
    items: tuple[Word, ...] | None  # None = "$@"
    body: Seq
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class Group:
    body: Seq
    subshell: bool = False
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class FuncDef:
    name: str
    body: Command


Command = Union[Simple, If, While, For, Group, FuncDef]


@dataclass(frozen=True, slots=True)
class Pipeline:
    commands: tuple[Command, ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class AndOr:
    first: Pipeline
    rest: tuple[tuple[str, Pipeline], ...] = ()  # ("&&" | "||", pipeline)


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[tuple[AndOr, bool], ...]  # (and-or list, run in background)
