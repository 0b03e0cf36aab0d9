"""Dockerfile-style ``--change`` lines for ``docker import`` and ``docker commit``.

Supported instructions (case-insensitive), with Docker's semantics:

* ``CMD`` / ``ENTRYPOINT``: JSON array form, or shell form → ``["/bin/sh", "-c", "<rest>"]``.
  Setting ``ENTRYPOINT`` clears ``Cmd`` unless a ``CMD`` is in the same batch (as the builder).
* ``ENV K=V K2="v 2"`` and legacy ``ENV K value with spaces``; an existing ``K`` is replaced.
* ``LABEL k=v …`` (and legacy ``LABEL k v``), ``WORKDIR`` (relative paths join the current one),
  ``USER``, ``EXPOSE 80 80/tcp 53/udp 8000-8002``, ``VOLUME /a /b`` or ``VOLUME ["/a"]``,
  ``STOPSIGNAL`` (name or number), ``HEALTHCHECK NONE | [--interval=…] CMD …``.
* ``$VAR``/``${VAR}``/``${VAR:-default}``/``${VAR:+alt}`` are expanded from the config's Env
  for ENV, LABEL, WORKDIR, USER, EXPOSE, VOLUME and STOPSIGNAL, as the builder does.

Anything else (RUN, FROM, COPY, ONBUILD, …) is rejected with Docker's
"<CMD> is not a valid change command". ONBUILD is refused on purpose: wharfie has no builder to
run the triggers.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

from engine.errors import InvalidArgument
from engine.kernel import SIGNALS, SIGRTMAX

JSONDict = dict[str, Any]

VALID_COMMANDS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "HEALTHCHECK", "LABEL", "STOPSIGNAL",
                  "USER", "VOLUME", "WORKDIR")
_PROTOCOLS = ("tcp", "udp", "sctp")
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}


# -- shell-word lexing ------------------------------------------------------------------------

def _lookup(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name)


def _expand_var(text: str, i: int, env: Mapping[str, str]) -> tuple[str, int]:
    """Expand the variable starting after ``$`` at ``text[i]``; returns (value, next index)."""
    if i < len(text) and text[i] == "{":
        end = text.find("}", i)
        if end < 0:
            raise InvalidArgument(f"missing '}}' in {text!r}")
        body = text[i + 1:end]
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(?::([-+])(.*))?$", body, re.S)
        if m is None:
            raise InvalidArgument(f"bad substitution {body!r} in {text!r}")
        value = _lookup(env, m.group(1))
        if m.group(2) == "-":
            value = value if value else _expand(m.group(3), env)
        elif m.group(2) == "+":
            value = _expand(m.group(3), env) if value else ""
        return value or "", end + 1
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i:])
    if m is None:
        return "$", i
    return _lookup(env, m.group(0)) or "", i + m.end()


def _words(text: str, env: Mapping[str, str] | None, split: bool = True) -> list[str]:
    """Lex like the Dockerfile shell lexer: quotes group and are removed, ``\\`` escapes,
    ``$`` expands (not within single quotes, not when ``env`` is None). With ``split=False``
    whitespace is kept and at most one word is returned."""
    words: list[str] = []
    cur: list[str] = []
    in_word = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace() and split:
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
            i += 1
            continue
        in_word = True
        if c == "\\" and i + 1 < n:
            cur.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise InvalidArgument(f"unexpected end of statement while looking for matching ' "
                                      f"in {text!r}")
            cur.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\$':
                    cur.append(text[i + 1])
                    i += 2
                elif text[i] == "$" and env is not None:
                    value, i = _expand_var(text, i + 1, env)
                    cur.append(value)
                else:
                    cur.append(text[i])
                    i += 1
            if i >= n:
                raise InvalidArgument(f'unexpected end of statement while looking for matching " '
                                      f"in {text!r}")
            i += 1
        elif c == "$" and env is not None:
            value, i = _expand_var(text, i + 1, env)
            cur.append(value)
        else:
            cur.append(c)
            i += 1
    if in_word:
        words.append("".join(cur))
    return words


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Expand and unquote ``text`` as one word (inner whitespace kept)."""
    words = _words(text.strip(), env, split=False)
    return words[0] if words else ""


def _env_map(cfg: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in cfg.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    return env


def _json_or_shell(rest: str) -> list[str]:
    stripped = rest.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return value
    return ["/bin/sh", "-c", stripped]


def _name_values(cmd: str, rest: str, env: Mapping[str, str]) -> list[tuple[str, str]]:
    words = _words(rest, None)
    if not words:
        raise InvalidArgument(f"{cmd} requires at least one argument")
    if "=" not in words[0]:
        # legacy "ENV name value with spaces": one pair, the value is the rest of the line
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise InvalidArgument(f"{cmd} must have two arguments")
        return [(key, _expand(value, env))]
    pairs = []
    for raw in re.findall(r"""(?:[^\s"'\\]|\\.|"(?:[^"\\]|\\.)*"|'[^']*')+""", rest):
        if "=" not in raw:
            raise InvalidArgument(f'Syntax error - can\'t find = in "{raw}". '
                                  "Must be of the form: name=value")
        key, _, value = raw.partition("=")
        key = _words(key, env)[0] if key else ""
        if not key:
            raise InvalidArgument(f"{cmd} names can not be blank")
        pairs.append((key, "".join(_words(value, env)) if value else ""))
    return pairs


# -- individual instructions ------------------------------------------------------------------

def parse_ports(specs: Iterable[str]) -> list[str]:
    """``["80", "53/udp", "8000-8001"]`` → ``["80/tcp", "53/udp", "8000/tcp", "8001/tcp"]``.

    Raises:
        InvalidArgument: "invalid containerPort: …" / "invalid proto: …".
    """
    out: list[str] = []
    for spec in specs:
        port, _, proto = spec.partition("/")
        proto = proto.lower() or "tcp"
        if proto not in _PROTOCOLS:
            raise InvalidArgument(f"invalid proto: {proto}")
        lo, _, hi = port.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise InvalidArgument(f"invalid containerPort: {port}")
        start, end = int(lo), int(hi or lo)
        if not (0 < start <= end <= 65535):
            raise InvalidArgument(f"invalid containerPort: {port}")
        out.extend(f"{p}/{proto}" for p in range(start, end + 1))
    return out


def parse_signal(text: str) -> str:
    """Validate a stop signal (``SIGTERM``, ``TERM``, ``15``, ``SIGRTMIN+3``); returns it as given.

    Raises:
        InvalidArgument: "Invalid signal: …".
    """
    s = text.strip()
    if s.isdigit():
        if 0 < int(s) <= SIGRTMAX:
            return s
    else:
        name = s.upper().removeprefix("SIG")
        if name in SIGNALS or re.match(r"^RT(MIN|MAX)([+-]\d+)?$", name):
            return s
    raise InvalidArgument(f"Invalid signal: {text}")


def parse_duration(text: str) -> int:
    """Go duration (``30s``, ``1m30s``, ``500ms``) → nanoseconds. Raises InvalidArgument."""
    if text == "0":
        return 0
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise InvalidArgument(f"time: invalid duration {text!r}")
    return int(total)


def _healthcheck(rest: str) -> JSONDict:
    words = rest.split()
    if words and words[0].upper() == "NONE":
        if len(words) > 1:
            raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    hc: JSONDict = {}
    flags = {"--interval": "Interval", "--timeout": "Timeout", "--start-period": "StartPeriod",
             "--start-interval": "StartInterval"}
    text = rest.strip()
    while text.startswith("--"):
        flag, _, text = text.partition(" ")
        name, _, value = flag.partition("=")
        text = text.strip()
        if name in flags:
            hc[flags[name]] = parse_duration(value)
        elif name == "--retries":
            if not value.isdigit():
                raise InvalidArgument(f"invalid --retries value {value!r}")
            hc["Retries"] = int(value)
        else:
            raise InvalidArgument(f"Unknown flag: {name.lstrip('-')}")
    kw, _, cmd = text.partition(" ")
    if kw.upper() != "CMD" or not cmd.strip():
        raise InvalidArgument("HEALTHCHECK requires a CMD instruction (or NONE)")
    argv = _json_or_shell(cmd)
    if argv[:2] == ["/bin/sh", "-c"] and not cmd.strip().startswith("["):
        hc["Test"] = ["CMD-SHELL", argv[2]]
    else:
        hc["Test"] = ["CMD", *argv]
    return hc


def apply_changes(config: Mapping[str, Any], changes: Iterable[str]) -> JSONDict:
    """Apply ``--change`` lines to a container config (``Cmd``, ``Env``…); returns a new dict.

    Args:
        config: the starting runtime config (the ``config`` section of an image config).
        changes: one instruction per string; blank strings are ignored.

    Returns:
        The updated config (the input is not modified).

    Raises:
        InvalidArgument: an unsupported instruction or a malformed argument.
    """
    cfg: JSONDict = json.loads(json.dumps(dict(config)))  # deep copy
    cmd_set = False
    for line in changes:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if "\t" in word:
            word, _, tail = word.partition("\t")
            rest = tail + " " + rest
        cmd = word.upper()
        rest = rest.strip()
        if cmd not in VALID_COMMANDS:
            raise InvalidArgument(f"{cmd} is not a valid change command")
        env = _env_map(cfg)
        if cmd == "CMD":
            if not rest:
                raise InvalidArgument("CMD requires at least one argument")
            cfg["Cmd"] = _json_or_shell(rest)
            cmd_set = True
        elif cmd == "ENTRYPOINT":
            if not rest:
                raise InvalidArgument("ENTRYPOINT requires at least one argument")
            cfg["Entrypoint"] = _json_or_shell(rest) or None  # "[]" resets it
            if not cmd_set:
                cfg["Cmd"] = None
        elif cmd == "ENV":
            for key, value in _name_values("ENV", rest, env):
                items = [e for e in (cfg.get("Env") or []) if e.partition("=")[0] != key]
                cfg["Env"] = [*items, f"{key}={value}"]
                env[key] = value
        elif cmd == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(_name_values("LABEL", rest, env))
            cfg["Labels"] = labels
        elif cmd == "WORKDIR":
            path = _expand(rest, env)
            if not path:
                raise InvalidArgument("WORKDIR requires exactly one argument")
            cfg["WorkingDir"] = posixpath.normpath(
                posixpath.join("/", cfg.get("WorkingDir") or "/", path))
        elif cmd == "USER":
            user = _expand(rest, env)
            if not user or len(user.split()) != 1:
                raise InvalidArgument("USER requires exactly one argument")
            cfg["User"] = user
        elif cmd == "EXPOSE":
            specs = _words(rest, env)
            if not specs:
                raise InvalidArgument("EXPOSE requires at least one argument")
            ports = dict(cfg.get("ExposedPorts") or {})
            ports.update({p: {} for p in parse_ports(specs)})
            cfg["ExposedPorts"] = ports
        elif cmd == "VOLUME":
            vols = _json_or_shell(rest)
            paths = _words(rest, env) if vols[:2] == ["/bin/sh", "-c"] else vols
            if not paths or any(not p.strip() for p in paths):
                raise InvalidArgument("VOLUME specified can not be an empty string")
            volumes = dict(cfg.get("Volumes") or {})
            volumes.update({p: {} for p in paths})
            cfg["Volumes"] = volumes
        elif cmd == "STOPSIGNAL":
            words = _words(rest, env)
            if len(words) != 1:
                raise InvalidArgument("STOPSIGNAL requires exactly one argument")
            cfg["StopSignal"] = parse_signal(words[0])
        elif cmd == "HEALTHCHECK":
            cfg["Healthcheck"] = _healthcheck(rest)
    return {k: v for k, v in cfg.items() if v is not None}
