"""The parts the CLI uses instead of heavier ones, held to what they replace: engine/client_json.py
against ``json``, and click's parser without its short-option detour (``ShortOptsFirst``) against
click's own messages."""

from __future__ import annotations

import json
import math
from typing import Any

import click
import pytest
from click.testing import CliRunner

from engine import client_json
from engine.cli.main import cli

DOCS: list[Any] = [
    {"Id": "a" * 64, "Warnings": [], "State": {"Running": False, "ExitCode": 0}, "n": None, "t": True},
    {"a": [1, 2.5, -0.0, 1e300, 10**30, "x\u00e9\n\t\"\\", "\U0001f600"], 3: "int key"},
    [], {}, "", 0, -7, 2.25, "\ud800", float("inf"), float("-inf"),
]


@pytest.mark.parametrize("doc", DOCS)
def test_dumps_is_json_dumps(doc: Any) -> None:
    assert client_json.dumps(doc) == json.dumps(doc)


@pytest.mark.parametrize("doc", DOCS)
def test_loads_round_trips_as_json(doc: Any) -> None:
    text = json.dumps(doc)
    assert repr(client_json.loads(text.encode())) == repr(json.loads(text.encode()))
    assert repr(client_json.loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("data", [
    b' {"a": 1} \n', b"\xef\xbb\xbf{\"a\": 1}", '{"a": 1}'.encode("utf-16"), b'{"a": NaN, "b": -Infinity}',
    b"", b"  ", b"nul", b'{"a": 1} x', b'{"a": "\x01"}', b'{"a": 1,}', b"\xff\xfe\xfd", b"[1, 2] [3]",
])
def test_loads_results_and_errors_are_jsons(data: bytes) -> None:
    def outcome(loads: Any) -> tuple[str, str]:
        try:
            v = loads(data)
        except ValueError as e:
            return type(e).__name__, str(e)
        return "ok", repr(v) if not (isinstance(v, dict) and any(isinstance(x, float) and math.isnan(x)
                                                                  for x in v.values())) else "nan"
    assert outcome(client_json.loads) == outcome(json.loads)


def test_dumps_errors_are_jsons() -> None:
    for bad in (object(), {"s": {1, 2}}):
        with pytest.raises(TypeError) as ours:
            client_json.dumps(bad)
        with pytest.raises(TypeError) as theirs:
            json.dumps(bad)
        assert str(ours.value) == str(theirs.value)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference detected"):
        client_json.dumps(loop)


@pytest.mark.parametrize("args,message", [
    (["--hots", "x", "ps"], "No such option '--hots'. (Did you mean one of: '--host', '--tls'?)"),
    (["-Z", "ps"], "No such option '-Z'."),
    (["-H", "unix:///nowhere", "run", "--rmm", "busybox"],
     "No such option '--rmm'. (Did you mean one of: '--memory', '--rm'?)"),
    (["-H", "unix:///nowhere", "run", "-itX", "busybox"], "No such option '-X'."),
    (["-H", "unix:///nowhere", "run", "-e"], "Option '-e' requires an argument."),
])
def test_option_errors_are_clicks(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_short_options_parse_as_before() -> None:
    """Bundled, attached and separate short options reach the command as click parses them."""
    seen: dict[str, Any] = {}
    cmd = cli.get_command(click.Context(cli), "run")
    assert cmd is not None
    ctx = cmd.make_context("run", ["-itd", "-eA=1", "-e", "B=2", "-uroot", "--rm", "busybox", "-x", "--y"])
    seen.update(ctx.params)
    assert (seen["interactive"], seen["tty"], seen["detach"], seen["auto_remove"]) == (True, True, True, True)
    assert (seen["env"], seen["user"], seen["image"], seen["command"]) == (("A=1", "B=2"), "root", "busybox",
                                                                          ("-x", "--y"))
    group = cli.make_context("wharfie", ["-H", "unix:///x", "-D", "ps"])
    assert group.params["host"] == "unix:///x" and group.params["debug"] is True
