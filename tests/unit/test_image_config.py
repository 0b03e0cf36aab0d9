"""Image config documents, image ids and OCI chain ids (pure)."""

from __future__ import annotations

import hashlib

import pytest

from engine.errors import InvalidArgument
from engine.images import config as c

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_chain_ids_follow_oci_spec() -> None:
    assert c.chain_ids([]) == []
    assert c.chain_ids([D1]) == [D1]
    c2 = _sha(f"{D1} {D2}")
    c3 = _sha(f"{c2} {D3}")
    assert c.chain_ids([D1, D2, D3]) == [D1, c2, c3]


def test_chain_ids_reject_bad_digest() -> None:
    with pytest.raises(InvalidArgument):
        c.chain_ids(["sha256:xyz"])


def test_new_config_and_id() -> None:
    doc = c.new_config(diff_ids=[D1], created=0.5, architecture="arm64", os="linux",
                       comment="Imported from -", container_config={"Cmd": ["sh"]})
    assert doc["architecture"] == "arm64"
    assert doc["created"] == "1970-01-01T00:00:00.5Z"
    assert doc["rootfs"] == {"type": "layers", "diff_ids": [D1]}
    assert doc["history"] == [{"created": doc["created"], "comment": "Imported from -"}]
    assert doc["config"] == {"Cmd": ["sh"]}
    data = c.canonical_json(doc)
    assert c.image_id(data) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert c.parse_config(data) == doc
    # canonical: independent of key order
    assert c.canonical_json(dict(reversed(list(doc.items())))) == data


def test_new_config_defaults_to_host_platform() -> None:
    doc = c.new_config(diff_ids=[D1], created=0)
    assert (doc["os"], doc["architecture"]) == c.host_platform()


def test_parent_history_is_extended() -> None:
    base = c.new_config(diff_ids=[D1], created=0, comment="base")
    child = c.new_config(diff_ids=[D1, D2], created=1, history=[{"created_by": "commit"}],
                         parent_config=base)
    assert [h.get("comment") or h.get("created_by") for h in child["history"]] == ["base", "commit"]


@pytest.mark.parametrize("mutate, what", [
    (lambda d: d.pop("architecture"), "architecture"),
    (lambda d: d.__setitem__("rootfs", {"type": "x", "diff_ids": []}), "rootfs.type"),
    (lambda d: d["rootfs"].__setitem__("diff_ids", ["nope"]), "diff_ids"),
    (lambda d: d.__setitem__("config", {"Cmd": "sh"}), "config.Cmd"),
    (lambda d: d.__setitem__("config", {"Env": [1]}), "config.Env"),
    (lambda d: d.__setitem__("created", "yesterday"), "timestamp"),
    (lambda d: d["history"].append({"created_by": "x"}), "history"),
])
def test_validate_rejects(mutate, what: str) -> None:  # type: ignore[no-untyped-def]
    doc = c.new_config(diff_ids=[D1], created=0)
    mutate(doc)
    with pytest.raises(InvalidArgument, match=what.split(".")[0]):
        c.validate_config(doc)


def test_parse_config_rejects_garbage() -> None:
    with pytest.raises(InvalidArgument):
        c.parse_config(b"{not json")
    with pytest.raises(InvalidArgument):
        c.parse_config(b"[]")


def test_time_roundtrip() -> None:
    assert c.parse_time(c.format_time(1700000000.25)) == pytest.approx(1700000000.25)
    assert c.parse_time("2024-01-02T03:04:05+01:00") == c.parse_time("2024-01-02T02:04:05Z")
    with pytest.raises(InvalidArgument):
        c.parse_time("2024-01-02")


def test_parse_platform() -> None:
    assert c.parse_platform("linux/arm64/v8") == ("linux", "arm64", "v8")
    assert c.parse_platform("linux")[0] == "linux"
    with pytest.raises(InvalidArgument):
        c.parse_platform("linux//v8")
