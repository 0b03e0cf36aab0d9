"""The ``wharfie`` launcher: a start-up script that skips ``site``, written over pip's one.

    python -m engine.cli.launcher PATH      # e.g. .venv/bin/wharfie (install.sh does this)

pip's console script (from ``[project.scripts]``, what a plain wheel install keeps) starts the
interpreter with ``site``: it finds the venv, reads every ``.pth`` file (setuptools'
``distutils-precedence.pth`` runs an import hook, the editable install's adds the source tree)
and imports Debian's ``sitecustomize`` (the apport hook) — ~1-3 ms per CLI start, before any
work. The launcher starts the same interpreter with ``-S`` and appends to ``sys.path`` exactly
what ``site`` would have appended for it, as found when the launcher is written (the venv's
site-packages, the editable source tree). Should those imports fail later (the venv or tree
moved), it runs ``site.main()`` and imports again, so it degrades to pip's behaviour rather than
break. It also holds the garbage collector off during start-up (``engine.cli.main.main``
releases it once the command is resolved).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

TEMPLATE = """#!{python} -S
# wharfie's launcher, written by `python -m engine.cli.launcher` (see engine/cli/launcher.py):
# the interpreter starts without `site`; these are the paths `site` would have added.
import gc, sys
gc.disable()  # until the command is resolved: engine.cli.main.main turns it back on
sys.path += {paths}
try:
    from engine.cli.main import main
except ImportError:  # moved since written: let `site` find the paths
    import site
    site.main()
    from engine.cli.main import main
sys.exit(main())
"""

_PROBE = "import json, sys; print(json.dumps(sys.path))"


def site_paths(python: str) -> list[str]:
    """The ``sys.path`` entries ``site`` adds when ``python`` starts (in order): its path with
    ``site`` minus its path without. Raises CalledProcessError if ``python`` fails to run."""

    def path(*flags: str) -> list[str]:
        out = subprocess.run([python, "-E", *flags, "-c", _PROBE], capture_output=True, text=True, check=True,
                             cwd="/").stdout
        return list(json.loads(out))

    without = set(path("-S"))
    return [p for p in path() if p not in without]


def script(python: str, paths: list[str]) -> str:
    """The launcher's text for the interpreter ``python`` (an absolute path) and ``paths``."""
    if not os.path.isabs(python) or any(c.isspace() for c in python):
        raise ValueError(f"the launcher needs an absolute interpreter path without spaces, not {python!r}")
    return TEMPLATE.format(python=python, paths=repr(list(paths)))


def write(path: str, python: str | None = None) -> None:
    """Write the launcher for ``python`` (default: this interpreter) to ``path``, mode 0755,
    replacing whatever is there (pip's script) in one rename."""
    python = python or sys.executable
    text = script(python, site_paths(python))
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.executable} -m engine.cli.launcher PATH")
    write(sys.argv[1])


if __name__ == "__main__":
    main()
