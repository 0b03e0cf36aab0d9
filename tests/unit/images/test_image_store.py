"""ImageStore: import (plain/gz/bz2/xz), changes, tag, lookup, inspect, list, remove, prune."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma

import pytest
from tests.unit.images.imgtestutil import make_tar

from engine.errors import AmbiguousReference, Conflict, InvalidArgument, NotFound, NotImplemented_
from engine.images.store import ImageStore
from engine.store import fsck

TAR = make_tar({"bin/sh": b"#!", "etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
DIFF = "sha256:" + hashlib.sha256(TAR).hexdigest()


def _import(images: ImageStore, data: bytes = TAR, ref: str | None = None, **kw: object) -> str:
    return images.import_tar(io.BytesIO(data), ref, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, bz2.compress, lzma.compress],
                         ids=["plain", "gzip", "bzip2", "xz"])
def test_import_stores_uncompressed_tar(images: ImageStore, compress) -> None:  # type: ignore[no-untyped-def]
    image_id = _import(images, compress(TAR), "myimg:1")
    rec = images.inspect("myimg:1")
    assert rec.id == image_id
    assert rec.diff_ids == (DIFF,) and rec.chain_ids == (DIFF,)
    assert images.blobs.read_bytes(DIFF) == TAR
    assert rec.size == len(TAR)
    assert rec.repo_tags == ("myimg:1",)
    assert rec.comment == "Imported from -"
    assert rec.history == [{"created": rec.created, "comment": "Imported from -"}]
    data = images.meta.get_image(image_id).config.encode()  # type: ignore[union-attr]
    assert image_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert images.layer_chain(image_id) == [(DIFF, DIFF, DIFF)]
    assert fsck.check(images.meta, images.blobs).clean


def test_import_changes_message_platform(images: ImageStore) -> None:
    image_id = _import(images, ref=None, changes=['CMD ["sh"]', "ENV A=1", "EXPOSE 80"],
                       message="hello", platform="linux/arm64/v8")
    rec = images.inspect(image_id)
    assert rec.container_config == {"Cmd": ["sh"], "Env": ["A=1"], "ExposedPorts": {"80/tcp": {}}}
    assert rec.comment == "hello" and rec.history[0]["comment"] == "hello"
    assert (rec.os, rec.architecture, rec.config["variant"]) == ("linux", "arm64", "v8")
    assert rec.repo_tags == ()


def test_import_rejects_bad_input_and_leaves_nothing(images: ImageStore) -> None:
    with pytest.raises(InvalidArgument, match="not a valid tar"):
        _import(images, b"this is not a tar archive at all" * 40)
    with pytest.raises(InvalidArgument, match="not a valid tar"):
        _import(images, b"")
    with pytest.raises(InvalidArgument, match="corrupt gzip"):
        _import(images, gzip.compress(TAR)[:-20])
    with pytest.raises((NotImplemented_, InvalidArgument), match="zstd|not a valid tar"):
        _import(images, b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    with pytest.raises(InvalidArgument, match="not a valid change command"):
        _import(images, changes=["RUN true"])
    with pytest.raises(InvalidArgument, match="must be lowercase"):
        _import(images, ref="Bad")
    assert images.blobs.list() == [] and images.meta.list_images() == []
    assert fsck.check(images.meta, images.blobs).clean


def test_import_same_content_twice_dedupes(images: ImageStore) -> None:
    a = _import(images, ref="a")
    b = _import(images, ref="b")  # different created time → different config/id, same layer
    assert a != b
    assert images.blobs.list() == [DIFF]
    assert images.meta.layer_refcount(DIFF) == 2


def test_lookup_forms(images: ImageStore) -> None:
    image_id = _import(images, ref="busybox")
    hexid = image_id[7:]
    for ref in ("busybox", "busybox:latest", "docker.io/library/busybox:latest", image_id, hexid,
                hexid[:1], hexid[:12], "sha256:" + hexid[:5]):
        assert images.lookup(ref) == image_id
    with pytest.raises(NotFound, match="No such image: busybox:nope"):
        images.lookup("busybox:nope")
    with pytest.raises(NotFound, match="No such image: other:latest"):
        images.lookup("other")
    with pytest.raises(NotFound):
        images.lookup("sha256:" + "f" * 64)
    with pytest.raises(InvalidArgument):
        images.lookup("UPPER")


def test_ambiguous_prefix(images: ImageStore) -> None:
    seen: dict[str, str] = {}
    while True:  # pigeonhole: at most 17 imports until two ids share their first hex digit
        image_id = _import(images)
        if image_id[7] in seen:
            break
        seen[image_id[7]] = image_id
    with pytest.raises(AmbiguousReference):
        images.lookup(image_id[7])
    assert images.lookup(image_id) == image_id


def test_tag(images: ImageStore) -> None:
    image_id = _import(images, ref="a")
    images.tag("a", "b:v1")
    images.tag(image_id[7:19], "myreg:5000/x/y")
    assert images.inspect(image_id).repo_tags == ("a:latest", "b:v1", "myreg:5000/x/y:latest")
    with pytest.raises(NotFound):
        images.tag("nope", "c")
    with pytest.raises(InvalidArgument):
        images.tag("a", "c@sha256:" + "0" * 64)
    with pytest.raises(InvalidArgument):
        images.tag("a", "a//b")


def test_retag_leaves_old_image_dangling(images: ImageStore) -> None:
    old = _import(images, ref="app")
    new = _import(images, ref="app")
    assert images.lookup("app") == new
    assert images.inspect(old).repo_tags == ()
    assert [r.id for r in images.list(filters={"dangling": ["true"]})] == [old]


def test_list_filters(images: ImageStore) -> None:
    a = _import(images, ref="busybox:1", changes=["LABEL tier=base"])
    b = _import(images, ref="library/alpine:3", changes=["LABEL tier=app"])
    c = _import(images, ref="me/app:dev")
    d = _import(images)  # dangling
    assert [r.id for r in images.list()] == [d, c, b, a]
    assert [r.id for r in images.list(filters={"dangling": ["false"]})] == [c, b, a]
    assert [r.id for r in images.list(filters={"reference": ["busy*"]})] == [a]
    assert [r.id for r in images.list(filters={"reference": ["*:3", "me/*"]})] == [c, b]
    assert [r.id for r in images.list(filters={"reference": ["*"]})] == [b, a]  # "*" stops at "/"
    assert [r.id for r in images.list(filters={"label": ["tier"]})] == [b, a]
    assert [r.id for r in images.list(filters={"label": ["tier=app"]})] == [b]
    assert [r.id for r in images.list(filters={"before": ["me/app:dev"]})] == [b, a]
    assert [r.id for r in images.list(filters={"since": ["alpine:3"]})] == [d, c]
    images.tag("busybox:1", "other:x")
    assert images.list(filters={"reference": ["other"]})[0].repo_tags == ("other:x",)
    with pytest.raises(InvalidArgument, match="invalid filter 'bogus'"):
        images.list(filters={"bogus": ["1"]})
    with pytest.raises(InvalidArgument):
        images.list(filters={"dangling": ["maybe"]})


def test_layer_chain_unknown(images: ImageStore) -> None:
    with pytest.raises(NotFound):
        images.layer_chain("sha256:" + "0" * 64)


def test_import_zstd_when_available(images: ImageStore) -> None:
    zstandard = pytest.importorskip("zstandard")
    image_id = _import(images, zstandard.ZstdCompressor().compress(TAR))
    assert images.inspect(image_id).diff_ids
