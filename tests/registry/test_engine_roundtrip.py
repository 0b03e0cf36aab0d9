"""Engine-level push and pull against Debian's reference registry (sim backend)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from engine.engine import Engine
from engine.errors import NotFound, PermissionDenied
from engine.registry.credentials import Credentials
from tests.registry.conftest import PASSWORD, USER
from tests.registry.rigs import RefRegistry, layer_tar

pytestmark = pytest.mark.timeout(120)


def child_image(engine: Engine, parent_ref: str, reference: str, files: dict[str, bytes]) -> str:
    parent = engine.image_store.lookup(parent_ref)
    return engine.image_store.commit(io.BytesIO(layer_tar(files)), parent, {"Cmd": ["sh"]}, reference)


async def test_push_then_pull_keeps_id_and_layers(engine: Engine, other: Engine, registry: RefRegistry) -> None:
    ref = f"{registry.host}/rt/busybox:1"
    engine.image_tag("busybox:latest", ref)
    msgs: list[dict[str, Any]] = []
    result = await engine.image_push(ref, progress=msgs.append)
    assert result.pushed and not result.skipped
    statuses = [m.get("status") for m in msgs]
    assert "Pushed" in statuses and f"1: digest: {result.digest} size: {result.size}" in statuses
    src = engine.image_inspect(ref)
    pulled: list[dict[str, Any]] = []
    image_id = await other.image_pull(ref, progress=pulled.append)
    assert image_id == src.id
    got = other.image_inspect(ref)
    assert got.diff_ids == src.diff_ids
    assert f"{registry.host}/rt/busybox@{result.digest}" in got.repo_digests
    st = [m.get("status") for m in pulled]
    for want in ("Pulling fs layer", "Downloading", "Verifying Checksum", "Download complete", "Extracting",
                 "Pull complete", f"Digest: {result.digest}",
                 f"Status: Downloaded newer image for {registry.host}/rt/busybox:1"):
        assert want in st, (want, st)
    assert other.check().clean
    # pulling again changes nothing
    again: list[dict[str, Any]] = []
    assert await other.image_pull(ref, progress=again.append) == image_id
    assert f"Status: Image is up to date for {registry.host}/rt/busybox:1" in [m.get("status") for m in again]
    # and by digest
    by_digest = f"{registry.host}/rt/busybox@{result.digest}"
    assert await other.image_pull(by_digest) == image_id
    assert other.image_inspect(by_digest).id == image_id


async def test_second_image_pushes_only_its_new_layer(engine: Engine, registry: RefRegistry) -> None:
    base = f"{registry.host}/share/base:1"
    engine.image_tag("busybox:latest", base)
    await engine.image_push(base)
    child = f"{registry.host}/share/child:1"
    child_image(engine, "busybox:latest", child, {"etc/motd": b"hello\n"})
    msgs: list[dict[str, Any]] = []
    result = await engine.image_push(child, progress=msgs.append)
    assert len(result.pushed) == 1
    assert len(result.skipped) == 1
    st = [m.get("status") for m in msgs]
    assert ("Mounted from share/base" in st) or ("Layer already exists" in st)
    # pushing the same again: everything exists, nothing is compressed or sent
    msgs.clear()
    again = await engine.image_push(child, progress=msgs.append)
    assert not again.pushed and again.digest == result.digest
    assert [m.get("status") for m in msgs].count("Layer already exists") == 2


async def test_pull_by_digest_of_unknown_manifest_is_not_found(engine: Engine, registry: RefRegistry) -> None:
    before = engine.image_list(all=True)
    with pytest.raises(NotFound):
        await engine.image_pull(f"{registry.host}/nope/x@sha256:{'0' * 64}")
    with pytest.raises(NotFound):
        await engine.image_pull(f"{registry.host}/nope/x:1")
    assert engine.image_list(all=True) == before
    assert engine.check().clean


async def test_auth_registry(engine: Engine, other: Engine, auth_registry: RefRegistry) -> None:
    ref = f"{auth_registry.host}/priv/bb:1"
    engine.image_tag("busybox:latest", ref)
    with pytest.raises(PermissionDenied):
        await engine.image_push(ref)
    with pytest.raises(PermissionDenied):
        await engine.registry_login(auth_registry.host, USER, "wrong")
    assert (await engine.registry_login(auth_registry.host, USER, PASSWORD))["Status"] == "Login Succeeded"
    creds = Credentials(USER, PASSWORD)
    await engine.image_push(ref, auth=creds)
    with pytest.raises(PermissionDenied):
        await other.image_pull(ref)
    assert other.image_list(all=True) == [] and other.check().clean
    assert await other.image_pull(ref, auth=creds) == engine.image_inspect(ref).id


async def test_chunked_push_to_reference_registry(engine: Engine, other: Engine, registry: RefRegistry) -> None:
    import dataclasses

    engine.registry_options = dataclasses.replace(engine.registry_options, chunk_size=100 * 1024)
    ref = f"{registry.host}/chunked/bb:1"
    child_image(engine, "busybox:latest", ref, {"blob.bin": bytes(range(256)) * 4096})
    result = await engine.image_push(ref)
    assert len(result.pushed) >= 1
    assert await other.image_pull(ref) == engine.image_inspect(ref).id


async def test_streamed_push_to_reference_registry(engine: Engine, other: Engine, registry: RefRegistry) -> None:
    """The default upload of a layer over 1 MiB compressed: ONE streamed PATCH (as docker) that
    Debian's registry takes; the image pulls back the same."""
    import os

    ref = f"{registry.host}/streamed/bb:1"
    child_image(engine, "busybox:latest", ref, {"random.bin": os.urandom(3 * 1024 * 1024)})
    result = await engine.image_push(ref)
    assert len(result.pushed) == 2
    assert await other.image_pull(ref) == engine.image_inspect(ref).id
    assert other.check().clean


async def test_push_refusals(engine: Engine, registry: RefRegistry) -> None:
    from engine.errors import InvalidArgument

    with pytest.raises(NotFound, match="does not exist locally"):
        await engine.image_push(f"{registry.host}/none/x:1")
    with pytest.raises(InvalidArgument):
        await engine.image_push(f"{registry.host}/none/x@sha256:{'a' * 64}")
    with pytest.raises(InvalidArgument):
        await engine.image_push("x/UPPER:1")
