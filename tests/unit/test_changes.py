"""Dockerfile-style --change lines (pure)."""

from __future__ import annotations

import pytest

from engine.errors import InvalidArgument
from engine.images.changes import apply_changes, parse_duration, parse_ports, parse_signal


def test_cmd_forms() -> None:
    assert apply_changes({}, ['CMD ["echo", "hi"]'])["Cmd"] == ["echo", "hi"]
    assert apply_changes({}, ["CMD echo hi"])["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert apply_changes({}, ["cmd [not json"])["Cmd"] == ["/bin/sh", "-c", "[not json"]


def test_entrypoint_resets_cmd_unless_cmd_in_batch() -> None:
    base = {"Cmd": ["sh"]}
    assert apply_changes(base, ['ENTRYPOINT ["top"]']) == {"Entrypoint": ["top"]}
    out = apply_changes(base, ['CMD ["-b"]', "ENTRYPOINT top -d"])
    assert out == {"Cmd": ["-b"], "Entrypoint": ["/bin/sh", "-c", "top -d"]}
    assert "Entrypoint" not in apply_changes({"Entrypoint": ["x"]}, ["ENTRYPOINT []"])


def test_env_forms_and_replacement() -> None:
    out = apply_changes({"Env": ["A=old", "PATH=/bin"]},
                        ['ENV A=1 B="two words" C=x\\ y', "ENV D hello  world",
                         "ENV PATH=$PATH:/sbin E=${A}-${NOPE:-dflt}"])
    assert out["Env"] == ["A=1", "B=two words", "C=x y", "D=hello  world", "PATH=/bin:/sbin",
                          "E=1-dflt"]


def test_env_errors() -> None:
    with pytest.raises(InvalidArgument, match="requires at least one argument"):
        apply_changes({}, ["ENV"])
    with pytest.raises(InvalidArgument, match="can't find ="):
        apply_changes({}, ["ENV A=1 B"])
    with pytest.raises(InvalidArgument):
        apply_changes({}, ["ENV A"])


def test_label_workdir_user() -> None:
    out = apply_changes({"WorkingDir": "/app"}, [
        'LABEL a=b "c d"="e f"', "LABEL legacy value here", "WORKDIR sub", "WORKDIR ../x",
        "USER nobody:nogroup"])
    assert out["Labels"] == {"a": "b", "c d": "e f", "legacy": "value here"}
    assert out["WorkingDir"] == "/app/x"
    assert out["User"] == "nobody:nogroup"
    assert apply_changes({}, ["WORKDIR /abs"])["WorkingDir"] == "/abs"


def test_expose_volume_stopsignal() -> None:
    out = apply_changes({}, ["EXPOSE 80 53/udp 8000-8001/TCP", 'VOLUME ["/a", "/b"]', "VOLUME /c /d",
                             "STOPSIGNAL SIGQUIT"])
    assert out["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert out["Volumes"] == {"/a": {}, "/b": {}, "/c": {}, "/d": {}}
    assert out["StopSignal"] == "SIGQUIT"


@pytest.mark.parametrize("line, message", [
    ("EXPOSE abc", "invalid containerPort: abc"),
    ("EXPOSE 80/foo", "invalid proto: foo"),
    ("EXPOSE 70000", "invalid containerPort"),
    ("STOPSIGNAL SIGFOO", "Invalid signal: SIGFOO"),
    ("USER", "USER requires exactly one argument"),
    ("WORKDIR", "WORKDIR requires exactly one argument"),
    ("VOLUME", "VOLUME specified can not be an empty string"),
    ("CMD", "CMD requires at least one argument"),
])
def test_argument_errors(line: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        apply_changes({}, [line])


@pytest.mark.parametrize("cmd", ["RUN", "FROM", "COPY", "ADD", "ONBUILD", "MAINTAINER", "ARG",
                                 "SHELL", "BOGUS"])
def test_invalid_commands(cmd: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        apply_changes({}, [f"{cmd.lower()} something"])
    assert str(e.value) == f"{cmd} is not a valid change command"


def test_healthcheck() -> None:
    out = apply_changes({}, ["HEALTHCHECK --interval=5s --timeout=1m30s --retries=3 CMD curl -f x"])
    assert out["Healthcheck"] == {"Interval": 5_000_000_000, "Timeout": 90_000_000_000,
                                  "Retries": 3, "Test": ["CMD-SHELL", "curl -f x"]}
    assert apply_changes({}, ['HEALTHCHECK CMD ["true"]'])["Healthcheck"] == {"Test": ["CMD", "true"]}
    assert apply_changes({}, ["HEALTHCHECK NONE"])["Healthcheck"] == {"Test": ["NONE"]}
    with pytest.raises(InvalidArgument):
        apply_changes({}, ["HEALTHCHECK --bogus=1 CMD x"])


def test_input_not_modified_and_blank_lines_ignored() -> None:
    base = {"Env": ["A=1"]}
    out = apply_changes(base, ["", "   ", "ENV B=2"])
    assert base == {"Env": ["A=1"]}
    assert out["Env"] == ["A=1", "B=2"]


def test_helpers() -> None:
    assert parse_ports(["1-3/udp"]) == ["1/udp", "2/udp", "3/udp"]
    assert parse_signal("9") == "9" and parse_signal("term") == "term"
    assert parse_signal("SIGRTMIN+3") == "SIGRTMIN+3"
    with pytest.raises(InvalidArgument):
        parse_signal("99")
    assert parse_duration("1h2m3.5s") == 3_723_500_000_000
    assert parse_duration("250ms") == 250_000_000
    with pytest.raises(InvalidArgument):
        parse_duration("5")
