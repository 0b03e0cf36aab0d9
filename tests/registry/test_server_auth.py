"""``wharfie registry serve --token-auth`` (bearer tokens for htpasswd users, scopes enforced)
and the referrers API (distribution spec 1.1), against wharfie's client, skopeo and raw HTTP."""

from __future__ import annotations

import hashlib
import json
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
from engine.registry.session import parse_challenge
from tests.registry.rigs import Wharfie

pytestmark = pytest.mark.timeout(120)
USER, PW = "bob", "pw-1"


@pytest.fixture(scope="module")
def token_registry() -> Iterator[Wharfie]:
    pytest.importorskip("bcrypt")
    pytest.importorskip("jwt")
    with Wharfie(htpasswd={USER: PW}, token_auth=True).serving() as w:
        yield w


@pytest.fixture(scope="module")
def plain_registry() -> Iterator[Wharfie]:
    with Wharfie().serving() as w:
        yield w


def _token(host: str, *scopes: str, auth: tuple[str, str] | None = (USER, PW)) -> str:
    r = httpx.get(f"http://{host}/token", params=[("service", "wharfie-registry")] + [("scope", s) for s in scopes],
                  auth=auth)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_wharfie_pushes_and_pulls_through_token_auth(engine: Engine, other: Engine,
                                                           token_registry: Wharfie) -> None:
    host = token_registry.host
    ref = f"{host}/tok/bb:1"
    engine.image_tag("busybox:latest", ref)
    with pytest.raises(PermissionDenied, match="unauthorized"):
        await engine.image_push(ref)  # anonymous: the token grants nothing
    result = await engine.image_push(ref, auth=Credentials(USER, PW))
    assert result.pushed
    with pytest.raises(PermissionDenied, match="invalid username or password"):
        await other.image_pull(ref, auth=Credentials(USER, "wrong"))
    assert other.image_list(all=True) == [] and other.check().clean
    assert await other.image_pull(ref, auth=Credentials(USER, PW)) == engine.image_inspect(ref).id
    # `login` checks the credentials against the token endpoint
    assert (await other.registry_login(host, USER, PW))["Status"] == "Login Succeeded"
    with pytest.raises(PermissionDenied, match="invalid username or password"):
        await other.registry_login(host, USER, "wrong")


def test_challenges_and_token_endpoint(token_registry: Wharfie) -> None:
    base = f"http://{token_registry.host}"
    r = httpx.get(f"{base}/v2/")
    assert r.status_code == 401
    scheme, params = parse_challenge(r.headers["www-authenticate"])
    assert scheme == "bearer" and params["realm"] == f"{base}/token" and params["service"] == "wharfie-registry"
    r = httpx.get(f"{base}/v2/lib/x/manifests/1")
    _, params = parse_challenge(r.headers["www-authenticate"])
    assert r.status_code == 401 and params["scope"] == "repository:lib/x:pull"
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # wrong password: 401 from the token endpoint (GET with basic auth, and the OAuth2 POST form)
    r = httpx.get(f"{base}/token", params={"service": "wharfie-registry", "scope": "repository:a/x:pull"},
                  auth=(USER, "nope"))
    assert r.status_code == 401 and "invalid username or password" in r.text
    r = httpx.post(f"{base}/token", data={"grant_type": "password", "username": USER, "password": "nope",
                                          "service": "wharfie-registry"})
    assert r.status_code == 401
    r = httpx.post(f"{base}/token", data={"grant_type": "password", "username": USER, "password": PW,
                                          "service": "wharfie-registry", "scope": "repository:a/x:pull"})
    assert r.status_code == 200 and r.json()["expires_in"] > 0
    assert httpx.get(f"{base}/v2/", headers=_bearer(r.json()["access_token"])).status_code == 200
    # a tampered token is refused as invalid
    bad = _token(token_registry.host, "repository:a/x:pull")[:-3] + "AAA"
    r = httpx.get(f"{base}/v2/a/x/tags/list", headers=_bearer(bad))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


def test_scopes_are_enforced(token_registry: Wharfie) -> None:
    host = token_registry.host
    base = f"http://{host}"
    for_a = _token(host, "repository:team/a:pull,push")
    # a token for repository A opens uploads in A, not in B
    r = httpx.post(f"{base}/v2/team/a/blobs/uploads/", headers=_bearer(for_a))
    assert r.status_code == 202
    r = httpx.post(f"{base}/v2/team/b/blobs/uploads/", headers=_bearer(for_a))
    assert r.status_code == 401
    err = r.json()["errors"][0]
    assert err["code"] == "UNAUTHORIZED" and "repository:team/b:pull,push" in err["message"]
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    # pull-only cannot push; an anonymous token grants nothing
    pull_only = _token(host, "repository:team/a:pull")
    assert httpx.post(f"{base}/v2/team/a/blobs/uploads/", headers=_bearer(pull_only)).status_code == 401
    anon = _token(host, "repository:team/a:pull", auth=None)
    assert httpx.get(f"{base}/v2/team/a/tags/list", headers=_bearer(anon)).status_code == 401
    # a monolithic upload into A, then a mount into B: only with pull access to A
    blob = b"scoped blob"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    r = httpx.post(f"{base}/v2/team/a/blobs/uploads/", params={"digest": digest}, content=blob,
                   headers=_bearer(for_a))
    assert r.status_code == 201
    only_b = _token(host, "repository:team/b:pull,push")
    r = httpx.post(f"{base}/v2/team/b/blobs/uploads/", params={"mount": digest, "from": "team/a"},
                   headers=_bearer(only_b))
    assert r.status_code == 202  # no mount without pull on team/a: an upload session instead
    both = _token(host, "repository:team/b:pull,push", "repository:team/a:pull")
    r = httpx.post(f"{base}/v2/team/b/blobs/uploads/", params={"mount": digest, "from": "team/a"},
                   headers=_bearer(both))
    assert r.status_code == 201
    # the catalog needs its own scope
    assert httpx.get(f"{base}/v2/_catalog", headers=_bearer(for_a)).status_code == 401
    cat = _token(host, "registry:catalog:*")
    assert "team/a" not in httpx.get(f"{base}/v2/_catalog", headers=_bearer(cat)).json()["repositories"]


async def test_skopeo_through_token_auth(engine: Engine, token_registry: Wharfie, tmp_path: Any) -> None:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    archive = tmp_path / "bb.tar"
    with open(archive, "wb") as fh:
        engine.image_save(["busybox:latest"], fh)
    host = token_registry.host
    env = {**os.environ, "HOME": str(tmp_path)}
    policy = tmp_path / "policy.json"
    policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
    base = [skopeo, "--policy", str(policy)]
    p = subprocess.run(base + ["copy", "--dest-tls-verify=false", "--dest-creds", f"{USER}:wrong",
                               f"docker-archive:{archive}", f"docker://{host}/sk/bb:1"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode != 0 and ("401" in p.stderr or "unauthorized" in p.stderr.lower())
    p = subprocess.run(base + ["copy", "--dest-tls-verify=false", "--dest-creds", f"{USER}:{PW}",
                               f"docker-archive:{archive}", f"docker://{host}/sk/bb:1"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out"
    p = subprocess.run(base + ["copy", "--src-tls-verify=false", "--src-creds", f"{USER}:{PW}",
                               f"docker://{host}/sk/bb:1", f"oci:{out}:x"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "index.json").read_text())["manifests"]


def _put_blob(c: httpx.Client, repo: str, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    return {"digest": digest, "size": len(data)}


async def test_referrers(engine: Engine, plain_registry: Wharfie) -> None:
    host = plain_registry.host
    ref = f"{host}/refs/bb:1"
    engine.image_tag("busybox:latest", ref)
    subject = (await engine.image_push(ref, oci=True)).digest
    oci_m = "application/vnd.oci.image.manifest.v1+json"
    with httpx.Client(base_url=f"http://{host}") as c:
        empty = _put_blob(c, "refs/bb", b"{}") | {"mediaType": "application/vnd.oci.empty.v1+json"}
        sbom = _put_blob(c, "refs/bb", b'{"sbom": true}') | {"mediaType": "application/json"}
        subj = {"mediaType": oci_m, "digest": subject,
                "size": len(c.get(f"/v2/refs/bb/manifests/{subject}", headers={"Accept": oci_m}).content)}
        docs = [  # an artifact with artifactType, and a "signature" typed by its config only
            {"schemaVersion": 2, "mediaType": oci_m, "artifactType": "application/vnd.example.sbom.v1",
             "config": empty, "layers": [sbom], "subject": subj, "annotations": {"org.example.kind": "sbom"}},
            {"schemaVersion": 2, "mediaType": oci_m,
             "config": _put_blob(c, "refs/bb", b'{"sig": 1}') | {"mediaType": "application/vnd.example.sig.v1"},
             "layers": [sbom], "subject": subj},
        ]
        digests = []
        for doc in docs:
            data = json.dumps(doc).encode()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            r = c.put(f"/v2/refs/bb/manifests/{digest}", content=data, headers={"Content-Type": oci_m})
            assert r.status_code == 201, r.text
            assert r.headers["oci-subject"] == subject
            digests.append(digest)
        r = c.get(f"/v2/refs/bb/referrers/{subject}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.oci.image.index.v1+json")
        found = {d["digest"]: d for d in r.json()["manifests"]}
        assert set(found) == set(digests)
        assert found[digests[0]]["artifactType"] == "application/vnd.example.sbom.v1"
        assert found[digests[0]]["annotations"] == {"org.example.kind": "sbom"}
        assert found[digests[1]]["artifactType"] == "application/vnd.example.sig.v1"
        r = c.get(f"/v2/refs/bb/referrers/{subject}", params={"artifactType": "application/vnd.example.sig.v1"})
        assert r.headers["oci-filters-applied"] == "artifactType"
        assert [d["digest"] for d in r.json()["manifests"]] == [digests[1]]
        # no referrers: an empty index, not 404; a bad digest: 400
        r = c.get(f"/v2/refs/bb/referrers/sha256:{'0' * 64}")
        assert r.status_code == 200 and r.json()["manifests"] == []
        assert c.get("/v2/refs/bb/referrers/sha256:nothex").status_code == 400
        # a deleted referrer is no longer listed
        assert c.delete(f"/v2/refs/bb/manifests/{digests[0]}").status_code == 202
        assert [d["digest"] for d in c.get(f"/v2/refs/bb/referrers/{subject}").json()["manifests"]] == [digests[1]]
