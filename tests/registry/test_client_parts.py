"""The client's pure parts and platform selection: challenges, config.json, X-Registry-Auth,
endpoints, manifest indexes, the progress display."""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

import pytest

from engine.engine import Engine
from engine.errors import InvalidArgument, NotFound
from engine.images.config import host_platform
from engine.registry import credentials, endpoints
from engine.registry.options import RegistryOptions
from engine.registry.session import parse_challenge, parse_retry_after
from tests.registry.rigs import AppThread, Fake, config_for, gzip_bytes, layer_tar


def test_parse_challenge() -> None:
    scheme, p = parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"')
    assert scheme == "bearer" and p == {"realm": "https://auth.example/token", "service": "reg",
                                        "scope": "repository:a/b:pull"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    assert parse_challenge("") == ("", {})


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now) == pytest.approx(20.0)  # RFC 9110 date
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0.0  # in the past: now
    for bad in (None, "", "soon", "-5", "1.5e9x", "\u00b2"):
        assert parse_retry_after(bad, now) is None


def test_config_json_round_trip(tmp_path: Any) -> None:
    path = str(tmp_path / "d" / "config.json")
    assert credentials.lookup(path, "r:5000") is None
    credentials.store(path, "r:5000", credentials.Credentials("u", "p:w"))
    with open(path) as fh:
        doc = json.load(fh)
    assert doc["auths"]["r:5000"]["auth"] == "dTpwOnc="  # base64("u:p:w"), Docker's format
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert credentials.lookup(path, "r:5000") == credentials.Credentials("u", "p:w")
    assert credentials.erase(path, "r:5000") and not credentials.erase(path, "r:5000")


def test_registry_auth_header() -> None:
    h = credentials.encode_registry_auth(credentials.Credentials("a", "b"), "r:5000")
    assert credentials.decode_registry_auth(h) == credentials.Credentials("a", "b")
    assert credentials.decode_registry_auth("e30=") is None  # {} = anonymous
    with pytest.raises(InvalidArgument):
        credentials.decode_registry_auth("!!!")


def test_endpoints() -> None:
    o = RegistryOptions()
    hub = endpoints.endpoint("docker.io", o)
    assert hub.host == "registry-1.docker.io" and hub.bases == ("https://registry-1.docker.io",)
    assert hub.auth_key == "https://index.docker.io/v1/"
    local = endpoints.endpoint("127.0.0.1:5000", o)
    assert local.insecure and local.bases == ("https://127.0.0.1:5000", "http://127.0.0.1:5000")
    assert not endpoints.endpoint("myreg:5000", o).insecure
    assert endpoints.endpoint("myreg:5000", RegistryOptions(insecure_registries=("myreg:5000",))).insecure
    assert endpoints.endpoint("10.1.2.3:5000", RegistryOptions(insecure_registries=("10.0.0.0/8",))).insecure
    assert endpoints.auth_key("https://index.docker.io/v1/") == endpoints.HUB_AUTH_KEY


def _index(f: Fake, repo: str, tag: str, platforms: list[tuple[str, str]]) -> dict[str, str]:
    entries, ids = [], {}
    for os_, arch in platforms:
        tar = layer_tar({"arch": arch.encode()})
        cfg = config_for([tar], os_, arch)
        d = f.add_image(repo, f"{arch}-only", cfg, [gzip_bytes(tar)],
                        manifest_type="application/vnd.oci.image.manifest.v1+json")
        data = f.manifests[(repo, d)][0]
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": len(data),
                        "platform": {"os": os_, "architecture": arch}})
        ids[arch] = "sha256:" + hashlib.sha256(cfg).hexdigest()
    idx = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                      "manifests": entries}).encode()
    f.manifests[(repo, tag)] = (idx, "application/vnd.oci.image.index.v1+json")
    ids["index"] = "sha256:" + hashlib.sha256(idx).hexdigest()
    return ids


async def test_index_platform_selection(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    f, t = fake
    host_arch = host_platform()[1]
    other_arch = "s390x" if host_arch != "s390x" else "amd64"
    ids = _index(f, "multi/x", "1", [("linux", other_arch), ("linux", host_arch)])
    assert await engine.image_pull(f"{t.host}/multi/x:1") == ids[host_arch]
    assert await engine.image_pull(f"{t.host}/multi/x:1", platform=f"linux/{other_arch}") == ids[other_arch]
    rec = engine.image_inspect(f"{t.host}/multi/x:1")
    assert f"{t.host}/multi/x@{ids['index']}" in rec.repo_digests
    with pytest.raises(NotFound, match="no matching manifest for linux/riscv64"):
        await engine.image_pull(f"{t.host}/multi/x:1", platform="linux/riscv64")
    with pytest.raises(NotFound, match="platform"):
        await engine.image_pull(f"{t.host}/multi/x:{other_arch}-only", platform="linux/riscv64")
    assert engine.check().clean


def test_progress_display_redraws_per_layer() -> None:
    from engine.cli.registry import Display

    out = io.StringIO()
    d = Display(out, tty=True)
    d.show({"status": "Pulling fs layer", "id": "aaa", "progressDetail": {}})
    d.show({"status": "Pulling fs layer", "id": "bbb", "progressDetail": {}})
    d.show({"status": "Downloading", "id": "aaa", "progressDetail": {"current": 5, "total": 10},
            "progress": "[=====>     ] 5B/10B"})
    text = out.getvalue()
    assert "aaa: Pulling fs layer\nbbb: Pulling fs layer\n" in text
    assert "\x1b[2A\r\x1b[2Kaaa: Downloading [=====>     ] 5B/10B\r\x1b[2B" in text
    plain = io.StringIO()
    d = Display(plain, tty=False)
    d.show({"status": "Downloading", "id": "aaa", "progressDetail": {"current": 5, "total": 10}})
    d.show({"status": "Pull complete", "id": "aaa", "progressDetail": {}})
    assert plain.getvalue() == "aaa: Pull complete\n"


async def test_hub_pull_through_a_mirror(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    import dataclasses

    f, t = fake
    tar = layer_tar({"m": b"mirror"})
    cfg = config_for([tar])
    f.add_image("library/mirrored", "1", cfg, [gzip_bytes(tar)])
    dead = AppThread(Fake().app()).start()  # a mirror without the image: skipped
    try:
        engine.registry_options = dataclasses.replace(
            engine.registry_options, mirrors=(f"http://{dead.host}", f"http://{t.host}"))
        image_id = await engine.image_pull("mirrored:1")  # docker.io/library/mirrored:1
        assert image_id == "sha256:" + hashlib.sha256(cfg).hexdigest()
        assert engine.image_inspect("mirrored:1").repo_digests[0].startswith("mirrored@sha256:")
    finally:
        dead.stop()


async def test_bearer_token_auth(engine: Engine, fake: tuple[Fake, AppThread]) -> None:
    from aiohttp import web

    from tests.registry.rigs import err

    f, t = fake
    tar = layer_tar({"t": b"token"})
    f.add_image("tok/x", "1", config_for([tar]), [gzip_bytes(tar)])
    token_requests: list[dict[str, Any]] = []

    async def override(request: web.Request) -> web.StreamResponse | None:
        if request.path == "/token":
            token_requests.append({"query": dict(request.query), "auth": request.headers.get("Authorization")})
            return web.json_response({"token": "tok-" + request.query.get("scope", "none")})
        if request.headers.get("Authorization") != "Bearer tok-repository:tok/x:pull":
            return err(401, "UNAUTHORIZED", headers={
                "WWW-Authenticate": f'Bearer realm="http://{t.host}/token",service="fake",scope="repository:tok/x:pull"'})
        return None

    f.override = override
    from engine.registry.credentials import Credentials

    assert await engine.image_pull(f"{t.host}/tok/x:1", auth=Credentials("dan", "pw"))
    assert token_requests and token_requests[0]["query"]["service"] == "fake"
    assert token_requests[0]["query"]["scope"] == "repository:tok/x:pull"
    assert token_requests[0]["auth"].startswith("Basic ")
