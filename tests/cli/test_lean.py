"""Start-up stays lean (no server code, engine core or sim behind ``wharfie ps``), and the pure
helpers the CLI formats with: the Go-template subset and docker's human units."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine.api import humanize
from engine.cli.template import Template, TemplateError
from tests.api.daemon import ROOT, Daemon

PROBE = """
import sys
sys.argv = ["wharfie", "ps", "-a"]
from engine.cli.main import main
try:
    main()
except SystemExit:
    pass
heavy = ("aiohttp", "sim", "engine.engine", "engine.containers", "engine.images.store", "engine.api.app",
         "engine.bootstrap", "asyncio", "sqlite3")
print("LOADED", sorted({m.split(".")[0] if m.split(".")[0] != "engine" else m
                       for m in sys.modules if m.startswith(heavy)}))
"""


def test_wharfie_ps_imports_no_server_or_engine_core(daemon: Daemon) -> None:
    env = {**os.environ, "WHARFIE_HOST": daemon.host, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=20).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("LOADED")][0]
    assert json.loads(line[len("LOADED "):].replace("'", '"')) == []


RUN_PROBE = """
import atexit, os, sys
sys.argv = ["wharfie", "-H", os.environ["WHARFIE_HOST"], "run", "--rm", "-e", "A=1", "busybox", "true"]
from engine.cli.main import main
# what ``run`` does not need, or needs only for other inputs: each costs the CLI 0.4-20 ms
# (``socket``: UNIX connections go through ``_socket``, see engine/client_http.py; ``json``:
# engine/client_json.py runs its C part; ``signal``: engine/cli/term.py uses ``_signal``;
# ``difflib``: click's "did you mean" on short options, see ``ShortOptsFirst`` in engine/cli/app.py)
heavy = ("http", "email", "ssl", "urllib", "dataclasses", "shlex", "ipaddress", "socket", "selectors", "json",
         "signal", "difflib")
# reported from an atexit handler: ``run`` ends the process without finalization (os._exit),
# but after flushing stdio and running the atexit handlers
atexit.register(lambda: print("LOADED", sorted({m.split(".")[0] for m in sys.modules if m.startswith(heavy)})))
main()
"""


def test_wharfie_run_skips_http_client_and_friends(daemon: Daemon) -> None:
    env = {**os.environ, "WHARFIE_HOST": daemon.host, "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-c", RUN_PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=60, check=False)
    lines = dict(ln.split(" ", 1) for ln in p.stdout.splitlines() if ln.startswith("LOADED"))
    assert p.returncode == 0, p.stderr
    assert json.loads(lines["LOADED"].replace("'", '"')) == []


def test_wharfie_run_fast_exit_keeps_exit_code_output_and_atexit(daemon: Daemon) -> None:
    """``run`` skips the interpreter's finalization, not the container's exit code, its
    output (flushed), or the atexit handlers."""
    probe = ("import atexit, sys\n"
             "sys.argv = ['wharfie', 'run', '--rm', 'busybox', 'sh', '-c', 'echo out; echo err >&2; exit 3']\n"
             "from engine.cli.main import main\n"
             "atexit.register(lambda: sys.stdout.write('ATEXIT'))\n"
             "main()\n")
    # buffered stdout (as on a pipe): what the fast exit must flush
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(WHARFIE_HOST=daemon.host, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
                       check=False)
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\nATEXIT", "err\n")


@pytest.mark.parametrize("tpl,expected", [
    ("{{.ID}}\t{{.Names}}", "abc\tweb"), ("{{.State.Status}}", "running"), ("{{json .State}}", '{"Status":"running"}'),
    ('{{index .Labels "a"}}', "1"), ("{{range .L}}<{{.}}>{{end}}", "<x><y>"), ("{{if .Missing}}y{{else}}n{{end}}", "n"),
    ("{{.State | json}}", '{"Status":"running"}'), ('{{join .L ","}}', "x,y"), ("{{upper .ID}}", "ABC"),
    ("{{.Labels}}", "map[a:1]"), ("{{.Missing}}", "<no value>"), ("{{len .L}}", "2"),
])
def test_template(tpl: str, expected: str) -> None:
    data = {"ID": "abc", "Names": "web", "State": {"Status": "running"}, "Labels": {"a": "1"}, "L": ["x", "y"],
            "Missing": None}
    assert Template(tpl).render(data) == expected


@pytest.mark.parametrize("tpl", ["{{.A", "{{range .L}}", "{{end}}", "{{nofunc .A}}"])
def test_template_errors(tpl: str) -> None:
    with pytest.raises(TemplateError):
        Template(tpl).render({"A": 1, "L": []})


def test_humanize() -> None:
    assert [humanize.duration(s) for s in (0.5, 1, 5, 61, 150, 3600, 7200, 3 * 86400)] == [
        "Less than a second", "1 second", "5 seconds", "About a minute", "2 minutes", "About an hour", "2 hours",
        "3 days"]
    assert humanize.size(4_410_000, 3) == "4.41MB" and humanize.bytes_size(1536 * 1024) == "1.5MiB"
    assert humanize.parse_size("512m") == 512 * 1024**2 and humanize.parse_size("10k") == 10240
    with pytest.raises(ValueError):
        humanize.parse_size("lots")
