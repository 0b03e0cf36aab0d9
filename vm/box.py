"""The cached box (``build-box.sh``) and the wheelhouse the guest installs wharfie from."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

VM_DIR = Path(__file__).resolve().parent
REPO = VM_DIR.parent
CACHE = VM_DIR / ".cache"
RESULTS = VM_DIR / "results"


@dataclass(frozen=True, slots=True)
class Box:
    """A built box directory: ``box.img`` (qcow2), ``vmlinuz``, ``initrd.img``, the SSH key."""

    path: Path

    @property
    def image(self) -> Path:
        return self.path / "box.img"

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @property
    def key(self) -> Path:
        return self.path / "id_ed25519"

    @property
    def vagrant_box(self) -> Path:
        return self.path / "wharfie-bookworm.box"


def ensure_box(force: bool = False) -> tuple[Box, float]:
    """Build the box unless the cache holds one for this ``build-box.sh``.

    Returns:
        The box and the seconds spent (about 0 when cached).

    Raises:
        subprocess.CalledProcessError: the build failed (its log tail is on stderr).
    """
    t0 = time.monotonic()
    cmd = [str(VM_DIR / "build-box.sh")] + (["--force"] if force else [])
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return Box(Path(out.strip().splitlines()[-1])), time.monotonic() - t0


def _requirements() -> list[str]:
    """wharfie's runtime and test requirements, from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project.get("dependencies", []))
    reqs += project.get("optional-dependencies", {}).get("test", [])
    build = tomllib.loads((REPO / "pyproject.toml").read_text()).get("build-system", {})
    # the guest's editable install builds wharfie with these, offline too
    reqs += build.get("requires", []) + ["wheel"]
    return reqs


def ensure_wheelhouse() -> tuple[Path, float]:
    """Download wharfie's pip dependencies as wheels for the guest, cached by requirement set.

    The guest is Debian 12 (CPython 3.11, x86_64 glibc), so wheels for the host's interpreter
    fit when the host is the same; otherwise they are asked for that platform explicitly.

    Returns:
        The wheelhouse directory and the seconds spent.
    """
    t0 = time.monotonic()
    reqs = sorted(_requirements())
    key = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:12]
    house = CACHE / f"wheels-{key}"
    if (house / ".complete").exists():
        return house, time.monotonic() - t0
    house.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--dest", str(house),
           "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
           "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
           "--platform", "linux_x86_64", *reqs]
    if subprocess.run(cmd, check=False).returncode != 0:
        # some requirement ships no wheel: build it here (pure Python then, or the same ABI)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(house), *reqs],
                       check=True)
    (house / ".complete").touch()
    for old in CACHE.glob("wheels-*"):
        if old != house:
            subprocess.run(["rm", "-rf", str(old)], check=False)
    return house, time.monotonic() - t0
