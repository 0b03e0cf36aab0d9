"""``wharfie registry serve``: our registry against our client, skopeo, and the spec's corners."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.engine import Engine
from engine.errors import PermissionDenied
from engine.registry.credentials import Credentials
from tests.registry.rigs import Wharfie

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def wharfie_registry() -> Iterator[Wharfie]:
    with Wharfie().serving() as w:
        yield w


async def test_wharfie_push_pull_chunked(engine: Engine, other: Engine, wharfie_registry: Wharfie) -> None:
    # a chunk size below the layer size makes the push use PATCH chunks
    engine.registry_options = dataclasses.replace(engine.registry_options, chunk_size=64 * 1024)
    ref = f"{wharfie_registry.host}/lib/bb:1"
    engine.image_tag("busybox:latest", ref)
    result = await engine.image_push(ref)
    assert result.pushed
    assert await other.image_pull(ref) == engine.image_inspect(ref).id
    assert other.check().clean
    base = f"http://{wharfie_registry.host}"
    assert httpx.get(f"{base}/v2/lib/bb/tags/list").json() == {"name": "lib/bb", "tags": ["1"]}
    assert "lib/bb" in httpx.get(f"{base}/v2/_catalog").json()["repositories"]
    # HEAD and Range on a blob
    layer = httpx.get(f"{base}/v2/lib/bb/manifests/1",
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()["layers"][0]
    h = httpx.head(f"{base}/v2/lib/bb/blobs/{layer['digest']}")
    assert h.status_code == 200 and int(h.headers["content-length"]) == layer["size"]
    r = httpx.get(f"{base}/v2/lib/bb/blobs/{layer['digest']}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and len(r.content) == 10
    # another repository cannot read it without a mount
    assert httpx.get(f"{base}/v2/other/bb/blobs/{layer['digest']}").status_code == 404


def test_spec_corners(wharfie_registry: Wharfie) -> None:
    base = f"http://{wharfie_registry.host}"
    with httpx.Client(base_url=base, timeout=10) as c:
        data = b"hello chunked world" * 100
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = c.post("/v2/corners/a/blobs/uploads/")
        assert r.status_code == 202
        loc = r.headers["location"]
        r = c.patch(loc, content=data[:100], headers={"Content-Range": "0-99"})
        assert r.status_code == 202 and r.headers["range"] == "0-99"
        loc = r.headers["location"]
        bad = c.patch(loc, content=data[200:300], headers={"Content-Range": "200-299"})
        assert bad.status_code == 416
        assert bad.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        assert c.get(loc).status_code == 204
        wrong = c.put(loc, params={"digest": "sha256:" + "0" * 64}, content=data[100:])
        assert wrong.status_code == 400 and wrong.json()["errors"][0]["code"] == "DIGEST_INVALID"
        # monolithic POST ?digest=
        r = c.post("/v2/corners/a/blobs/uploads/", params={"digest": digest}, content=data)
        assert r.status_code == 201 and r.headers["docker-content-digest"] == digest
        # cross-repo mount
        r = c.post("/v2/corners/b/blobs/uploads/", params={"mount": digest, "from": "corners/a"})
        assert r.status_code == 201
        assert c.head(f"/v2/corners/b/blobs/{digest}").status_code == 200
        # manifest referencing a missing blob is refused
        man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "1" * 64,
                          "size": 2}, "layers": []}
        r = c.put("/v2/corners/a/manifests/x", json=man,
                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        # tags pagination
        cfg = b"{}"
        cd = "sha256:" + hashlib.sha256(cfg).hexdigest()
        c.post("/v2/corners/a/blobs/uploads/", params={"digest": cd}, content=cfg)
        man["config"] = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 2}
        for tag in ("t1", "t2", "t3"):
            r = c.put(f"/v2/corners/a/manifests/{tag}", json=man,
                      headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            assert r.status_code == 201
        page = c.get("/v2/corners/a/tags/list", params={"n": 2})
        assert page.json()["tags"] == ["t1", "t2"] and 'rel="next"' in page.headers["link"]
        assert c.get("/v2/corners/a/tags/list", params={"n": 2, "last": "t2"}).json()["tags"] == ["t3"]
        md = r.headers["docker-content-digest"]
        assert c.delete("/v2/corners/a/manifests/t3").status_code == 202
        assert c.get(f"/v2/corners/a/manifests/{md}").status_code == 200  # t1/t2 still name it
        assert c.delete(f"/v2/corners/a/manifests/{md}").status_code == 202
        assert c.get("/v2/corners/a/manifests/t1").status_code == 404
        assert c.get("/v2/Bad/manifests/t1").json()["errors"][0]["code"] == "NAME_INVALID"


async def test_htpasswd(engine: Engine, other: Engine) -> None:
    pytest.importorskip("bcrypt")
    w = Wharfie(htpasswd={"bob": "pw1"}).start()
    try:
        ref = f"{w.host}/sec/bb:1"
        engine.image_tag("busybox:latest", ref)
        with pytest.raises(PermissionDenied):
            await engine.image_push(ref)
        await engine.image_push(ref, auth=Credentials("bob", "pw1"))
        with pytest.raises(PermissionDenied):
            await other.image_pull(ref, auth=Credentials("bob", "nope"))
        assert await other.image_pull(ref, auth=Credentials("bob", "pw1")) == engine.image_inspect(ref).id
    finally:
        w.stop()


def _skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    return path


async def test_skopeo_copies_in_and_out(engine: Engine, other: Engine, wharfie_registry: Wharfie,
                                        tmp_path: Any) -> None:
    skopeo = _skopeo()
    archive = tmp_path / "bb.tar"
    with open(archive, "wb") as fh:
        engine.image_save(["busybox:latest"], fh)
    host = wharfie_registry.host
    env = {**os.environ, "HOME": str(tmp_path)}
    policy = tmp_path / "policy.json"
    policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
    run = [skopeo, "--policy", str(policy), "copy", "--dest-tls-verify=false"]
    p = subprocess.run(run + [f"docker-archive:{archive}", f"docker://{host}/sk/bb:1"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    # wharfie pulls what skopeo pushed
    image_id = await other.image_pull(f"{host}/sk/bb:1")
    assert other.image_inspect(image_id).diff_ids == engine.image_inspect("busybox:latest").diff_ids
    # and skopeo copies out what wharfie pushed
    ref = f"{host}/sk/from-wharfie:2"
    engine.image_tag("busybox:latest", ref)
    await engine.image_push(ref)
    out = tmp_path / "out"
    p = subprocess.run([skopeo, "--policy", str(policy), "copy", "--src-tls-verify=false",
                        f"docker://{ref}", f"oci:{out}:x"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    index = (out / "index.json").read_text()
    assert "manifests" in index
    # skopeo inspect sees the config digest = our image id
    p = subprocess.run([skopeo, "--policy", str(policy), "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0 and engine.image_inspect(ref).id in p.stdout


async def test_tls(engine: Engine, other: Engine, tmp_path: Any) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    w = Wharfie(tls=(cert, key)).start()
    try:
        ref = f"{w.host}/tls/bb:1"
        engine.image_tag("busybox:latest", ref)
        await engine.image_push(ref)  # loopback: HTTPS without verification, as Docker
        assert await other.image_pull(ref) == engine.image_inspect(ref).id
        import ssl

        r = httpx.get(f"https://{w.host}/v2/", verify=ssl.create_default_context(cafile=cert))
        assert r.status_code == 200
        # a non-loopback-style registry with a CA from certs.d verifies for real
        certs = tmp_path / "certs.d" / w.host
        certs.mkdir(parents=True)
        shutil.copy(cert, certs / "ca.crt")
        from engine.registry.endpoints import Endpoint
        from engine.registry.options import RegistryOptions
        from engine.registry.session import Session

        ep = Endpoint(w.host, (f"https://{w.host}",), insecure=False, auth_key=w.host)
        with Session(ep, RegistryOptions(certs_dir=str(tmp_path / "certs.d"))) as s:
            assert s.ping().status_code == 200
    finally:
        w.stop()
