"""Recursive-descent parser of the sim shell (a practical subset of POSIX sh / busybox ash).

Grammar::

    script   := linebreak [list] EOF
    list     := and_or ((";" | "&" | NL) linebreak and_or)* [";" | "&"]
    and_or   := pipeline (("&&" | "||") linebreak pipeline)*
    pipeline := ["!"] command ("|" linebreak command)*
    command  := if | while | until | for | "{" list "}" | "(" list ")" | name "()" command
              | simple  (compound commands may be followed by redirections)

Errors raise ``ShellSyntaxError`` with busybox's wording.
"""

from __future__ import annotations

import re

from sim.programs.shell_ast import (AndOr, Command, For, FuncDef, Group, If, Lit, Pipeline, Redir, Seq,
                                    ShellSyntaxError, Simple, Word, While)
from sim.programs.shell_lex import Lexer, Token

RESERVED = {"if", "then", "elif", "else", "fi", "while", "until", "do", "done", "for", "in",
            "{", "}", "!", "case", "esac"}
TERMINATORS = ("then", "elif", "else", "fi", "do", "done", "}", "esac")
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse(src: str) -> Seq:
    """Parse a whole script. Raises ``ShellSyntaxError``."""
    p = Parser(src, 0, nested=False)
    seq = p.parse_list(())
    tok = p.peek()
    if tok.kind != "eof":
        raise ShellSyntaxError(f'syntax error: unexpected "{_show(tok)}"')
    return seq


def _subparse(src: str, pos: int) -> tuple[Seq, int]:
    """Parse ``$(…)`` from ``pos`` (after the "("), returning the body and the end position."""
    p = Parser(src, pos, nested=True)
    seq = p.parse_list(())
    tok = p.next()
    if tok.kind != "op" or tok.value != ")":
        raise ShellSyntaxError("syntax error: unterminated $(...)")
    return seq, p.lexer.pos


def _show(tok: Token) -> str:
    if tok.kind == "eof":
        return "end of file"
    if tok.kind == "word":
        assert isinstance(tok.value, Word)
        return "".join(p.text if isinstance(p, Lit) else "$" for p in tok.value.parts)
    if tok.kind == "op":
        return "newline" if tok.value == "\n" else str(tok.value)
    fd, op = tok.value  # type: ignore[misc]
    return str(op)


class Parser:
    def __init__(self, src: str, pos: int, nested: bool) -> None:
        self.lexer = Lexer(src, pos, _subparse)
        self.nested = nested
        self._tok: Token | None = None

    def peek(self) -> Token:
        if self._tok is None:
            self._tok = self.lexer.next_token()
        return self._tok

    def next(self) -> Token:
        tok = self.peek()
        self._tok = None
        return tok

    def _is_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.value in ops

    def _is_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "word" and isinstance(tok.value, Word) and tok.value.plain() in words

    def _linebreak(self) -> None:
        while self._is_op("\n"):
            self.next()

    def _expect_word(self, word: str, context: str) -> None:
        self._linebreak()
        if not self._is_word(word):
            tok = self.peek()
            if tok.kind == "eof":
                raise ShellSyntaxError(f'syntax error: unexpected end of file (expecting "{word}")')
            raise ShellSyntaxError(f'syntax error: unexpected "{_show(tok)}" (expecting "{word}")')
        self.next()

    def parse_list(self, stops: tuple[str, ...]) -> Seq:
        """and-or lists until EOF, ")" or one of the reserved words in ``stops``."""
        items: list[tuple[AndOr, bool]] = []
        self._linebreak()
        while True:
            tok = self.peek()
            if tok.kind == "eof" or self._is_op(")") or self._is_word(*stops, *TERMINATORS):
                break
            if tok.kind == "op" and tok.value in (";", "&", ";;", "|", "&&", "||"):
                raise ShellSyntaxError(f'syntax error: unexpected "{_show(tok)}"')
            andor = self._and_or()
            bg = False
            if self._is_op("&"):
                self.next()
                bg = True
            elif self._is_op(";"):
                self.next()
            items.append((andor, bg))
            self._linebreak()
        return Seq(tuple(items))

    def _body(self, stops: tuple[str, ...], what: str) -> Seq:
        seq = self.parse_list(stops)
        if not seq.items:
            tok = self.peek()
            shown = "end of file" if tok.kind == "eof" else _show(tok)
            raise ShellSyntaxError(f'syntax error: unexpected "{shown}"' if tok.kind != "eof"
                                   else f"syntax error: unexpected end of file (expecting \"{what}\")")
        return seq

    def _and_or(self) -> AndOr:
        first = self._pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while self._is_op("&&", "||"):
            op = str(self.next().value)
            self._linebreak()
            rest.append((op, self._pipeline()))
        return AndOr(first, tuple(rest))

    def _pipeline(self) -> Pipeline:
        negate = False
        if self._is_word("!"):
            self.next()
            negate = True
        cmds = [self._command()]
        while self._is_op("|"):
            self.next()
            self._linebreak()
            cmds.append(self._command())
        return Pipeline(tuple(cmds), negate)

    def _redirs(self) -> tuple[Redir, ...]:
        out: list[Redir] = []
        while self.peek().kind == "redir":
            out.append(self._redir())
        return tuple(out)

    def _redir(self) -> Redir:
        fd, op = self.next().value  # type: ignore[misc]
        tok = self.next()
        if tok.kind != "word":
            raise ShellSyntaxError(f'syntax error: unexpected "{_show(tok)}"')
        assert isinstance(tok.value, Word)
        return Redir(fd, op, tok.value)

    def _command(self) -> Command:
        tok = self.peek()
        if tok.kind == "op" and tok.value == "(":
            self.next()
            body = self._body((), ")")
            if not self._is_op(")"):
                raise ShellSyntaxError('syntax error: unexpected end of file (expecting ")")')
            self.next()
            return Group(body, True, self._redirs())
        word = tok.value.plain() if tok.kind == "word" and isinstance(tok.value, Word) else None
        if word == "if":
            return self._if()
        if word in ("while", "until"):
            self.next()
            cond = self._body(("do",), "do")
            self._expect_word("do", word)
            body = self._body(("done",), "done")
            self._expect_word("done", word)
            return While(cond, body, word == "until", self._redirs())
        if word == "for":
            return self._for()
        if word == "{":
            self.next()
            body = self._body(("}",), "}")
            self._expect_word("}", "{")
            return Group(body, False, self._redirs())
        if word in RESERVED and word != "!":
            raise ShellSyntaxError(f'syntax error: unexpected "{word}"')
        return self._simple()

    def _if(self) -> If:
        self.next()
        branches: list[tuple[Seq, Seq]] = []
        else_body: Seq | None = None
        while True:
            cond = self._body(("then",), "then")
            self._expect_word("then", "if")
            body = self._body(("elif", "else", "fi"), "fi")
            branches.append((cond, body))
            if self._is_word("elif"):
                self.next()
                continue
            if self._is_word("else"):
                self.next()
                else_body = self._body(("fi",), "fi")
            self._expect_word("fi", "if")
            return If(tuple(branches), else_body, self._redirs())

    def _for(self) -> For:
        self.next()
        tok = self.next()
        name = tok.value.plain() if tok.kind == "word" and isinstance(tok.value, Word) else None
        if name is None or not _NAME.match(name):
            raise ShellSyntaxError("syntax error: bad for loop variable")
        items: tuple[Word, ...] | None = None
        self._linebreak()
        if self._is_word("in"):
            self.next()
            words: list[Word] = []
            while self.peek().kind == "word":
                w = self.next().value
                assert isinstance(w, Word)
                words.append(w)
            items = tuple(words)
            if self._is_op(";", "\n"):
                self.next()
        elif self._is_op(";"):
            self.next()
        self._expect_word("do", "for")
        body = self._body(("done",), "done")
        self._expect_word("done", "for")
        return For(name, items, body, self._redirs())

    def _simple(self) -> Command:
        assigns: list[tuple[str, Word]] = []
        words: list[Word] = []
        redirs: list[Redir] = []
        while True:
            tok = self.peek()
            if tok.kind == "redir":
                redirs.append(self._redir())
            elif tok.kind == "word":
                assert isinstance(tok.value, Word)
                w = tok.value
                first = w.parts[0] if w.parts else None
                m = (_ASSIGN.match(first.text) if isinstance(first, Lit) and not first.quoted
                     else None)
                if not words and m and isinstance(first, Lit):
                    rest = first.text[m.end():]
                    parts = ((Lit(rest),) if rest else ()) + w.parts[1:]
                    assigns.append((m.group(1), Word(parts)))
                    self.next()
                elif not words and not assigns and not redirs and w.plain() is not None:
                    self.next()
                    name = w.plain()
                    assert name is not None
                    if self._is_op("(") and _NAME.match(name):
                        return self._funcdef(name)
                    words.append(w)
                else:
                    words.append(w)
                    self.next()
            else:
                break
        if not (assigns or words or redirs):
            tok = self.peek()
            raise ShellSyntaxError(f'syntax error: unexpected "{_show(tok)}"' if tok.kind != "eof"
                                   else "syntax error: unexpected end of file")
        return Simple(tuple(assigns), tuple(words), tuple(redirs))

    def _funcdef(self, name: str) -> FuncDef:
        self.next()
        if not self._is_op(")"):
            raise ShellSyntaxError('syntax error: unexpected "(" (expecting ")")')
        self.next()
        self._linebreak()
        return FuncDef(name, self._command())
