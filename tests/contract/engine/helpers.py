from __future__ import annotations

from engine.containers.spec import ContainerSpec
from engine.engine import Engine


def spec(*cmd: str, **kw: object) -> ContainerSpec:
    return ContainerSpec(image=str(kw.pop("image", "busybox")), cmd=tuple(cmd) if cmd else None, **kw)  # type: ignore[arg-type]


def sh(script: str, **kw: object) -> ContainerSpec:
    return spec("sh", "-c", script, **kw)


async def output(eng: Engine, ref: str, **kw: object) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    async for e in eng.container_logs(ref, **kw):
        (out if e.stream == "stdout" else err).extend(e.data)
    return bytes(out), bytes(err)


async def run(eng: Engine, cmd: ContainerSpec, name: str | None = None) -> tuple[str, int]:
    c, code = await eng.run(cmd, name)
    return c.id, code
