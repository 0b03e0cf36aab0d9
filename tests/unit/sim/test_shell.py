"""The sim shell's lexer, parser and expansions (pure: no kernel, no processes)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.programs.shell_ast import (AndOr, CmdSub, For, Group, If, Lit, Param, Seq,
                                    ShellSyntaxError, Simple, While, Word)
from sim.programs.shell_expand import ExpansionError, Expander, arith
from sim.programs.shell_parse import parse


def words(cmd: object) -> list[str | None]:
    assert isinstance(cmd, Simple)
    return [w.plain() for w in cmd.words]


def first(seq: Seq) -> object:
    return seq.items[0][0].first.commands[0]


def test_lists_and_background() -> None:
    seq = parse("a; b & c && d || e\nf")
    assert [(len(ao.rest), bg) for ao, bg in seq.items] == [(0, False), (0, True), (2, False),
                                                            (0, False)]
    assert [op for op, _ in seq.items[2][0].rest] == ["&&", "||"]


def test_simple_command_parts() -> None:
    cmd = first(parse("A=1 B=x$y echo 'a b' \"c $d\" e\\ f 2>&1 >/tmp/o"))
    assert isinstance(cmd, Simple)
    assert [n for n, _ in cmd.assigns] == ["A", "B"]
    assert cmd.words[1] == Word((Lit("a b", True),))
    assert cmd.words[2] == Word((Lit("c ", True), Param("d", True)))
    assert [(r.fd, r.op) for r in cmd.redirs] == [(2, ">&"), (1, ">")]


def test_compound_commands() -> None:
    assert isinstance(first(parse("while true; do echo; done")), While)
    assert first(parse("until false; do :; done")).until  # type: ignore[union-attr]
    f = first(parse("for x in a b c; do echo $x; done"))
    assert isinstance(f, For) and [w.plain() for w in f.items or ()] == ["a", "b", "c"]
    i = first(parse("if a; then b; elif c; then d; else e; fi"))
    assert isinstance(i, If) and len(i.branches) == 2 and i.else_body is not None
    g = first(parse("( a; b ) > /dev/null"))
    assert isinstance(g, Group) and g.subshell and g.redirs


def test_command_substitution_nests() -> None:
    cmd = first(parse('echo "$(echo $(echo hi))" `echo b`'))
    assert isinstance(cmd, Simple)
    assert isinstance(cmd.words[1].parts[0], CmdSub)
    assert isinstance(cmd.words[2].parts[0], CmdSub)


def test_reserved_words_only_in_command_position() -> None:
    assert words(first(parse("echo if then done"))) == ["echo", "if", "then", "done"]


def test_comments() -> None:
    assert words(first(parse("echo a # b c"))) == ["echo", "a"]


@pytest.mark.parametrize("src, msg", [
    ("while true; do", 'unexpected end of file (expecting "done")'),
    ("fi", 'unexpected "fi"'),
    ("echo $((1+", "missing '))'"),
    ("echo 'abc", "unterminated quoted string"),
    ("; echo", 'unexpected ";"'),
    ("if true; then echo; done", 'unexpected "done" (expecting "fi")'),
])
def test_syntax_errors(src: str, msg: str) -> None:
    with pytest.raises(ShellSyntaxError) as ei:
        parse(src)
    assert msg in str(ei.value)


def expander(vars: dict[str, str], args: list[str] | None = None) -> Expander:
    async def substitute(seq: Seq) -> str:
        return "sub out\n\n"
    return Expander(vars.get, vars.__setitem__, substitute, lambda: args or [])


def expand(src: str, vars: dict[str, str], args: list[str] | None = None) -> list[str]:
    cmd = first(parse(src))
    assert isinstance(cmd, Simple)
    return asyncio.run(expander(vars, args).fields(cmd.words))


def test_field_splitting_and_quotes() -> None:
    v = {"X": " a  b ", "E": ""}
    assert expand("echo $X", v) == ["echo", "a", "b"]
    assert expand('echo "$X"', v) == ["echo", " a  b "]
    assert expand("echo $E", v) == ["echo"]
    assert expand('echo "$E"', v) == ["echo", ""]
    assert expand("echo p${X}q", v) == ["echo", "p", "a", "b", "q"]
    assert expand("echo p${Y}q", {"Y": "a  b"}) == ["echo", "pa", "bq"]
    assert expand('echo "$@"', v, ["1 2", "3"]) == ["echo", "1 2", "3"]
    assert expand("echo $(x)", v) == ["echo", "sub", "out"]


def test_parameter_operators() -> None:
    v = {"S": "set", "E": ""}
    assert expand("echo ${U:-d} ${E:-d} ${E-d} ${S:+alt} ${#S}", v) == \
        ["echo", "d", "d", "alt", "3"]
    assert expand("echo ${N:=new} $N", v) == ["echo", "new", "new"]
    with pytest.raises(ExpansionError):
        expand("echo ${Q:?missing}", v)


@pytest.mark.parametrize("expr, value", [("1+2*3", 7), ("(1+2)*3", 9), ("7/2", 3), ("-7/2", -3),
                                         ("-7%3", -1), ("X*2", 84), ("U+1", 1), ("3>2", 1),
                                         ("1 && 0", 0), ("!0", 1), ("1<<4", 16)])
def test_arith(expr: str, value: int) -> None:
    assert arith(expr, {"X": "42"}.get) == value


def test_arith_errors_and_assignment() -> None:
    with pytest.raises(ExpansionError):
        arith("1/0", {}.get)
    with pytest.raises(ExpansionError):
        arith("1 +* ", {}.get)
    store: dict[str, str] = {"i": "4"}
    assert arith("i += 2", store.get, store.__setitem__) == 6 and store["i"] == "6"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=40))
@settings(max_examples=300, deadline=None)
def test_parser_fails_only_with_syntax_errors(src: str) -> None:
    try:
        parse(src)
    except ShellSyntaxError:
        pass


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=30))
@settings(max_examples=300, deadline=None)
def test_single_quoting_round_trips(s: str) -> None:
    quoted = "'" + s.replace("'", "'\\''") + "'"
    assert expand(f"echo {quoted}", {}) == ["echo", s]


@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.sampled_from("+-*"))
def test_arith_matches_python(a: int, b: int, op: str) -> None:
    assert arith(f"A {op} B", {"A": str(a), "B": str(b)}.get) == eval(f"{a} {op} {b}")


def test_and_or_structure() -> None:
    ao = parse("! a | b && c").items[0][0]
    assert isinstance(ao, AndOr) and ao.first.negate and len(ao.first.commands) == 2
