"""ImageStore.remove / prune: Docker's untag/delete rules and conflicts."""

from __future__ import annotations

import hashlib
import io

import pytest
from tests.unit.images.imgtestutil import make_tar

from engine.errors import Conflict, NotFound
from engine.images.store import ImageStore
from engine.refs import short_id
from engine.store import fsck

TAR = make_tar({"a": b"1"})
TAR2 = make_tar({"b": b"2"})
DIFF = "sha256:" + hashlib.sha256(TAR).hexdigest()
CID = "c0ffee" + "0" * 58


def _import(images: ImageStore, ref: str | None = None, data: bytes = TAR) -> str:
    return images.import_tar(io.BytesIO(data), ref)


def test_remove_last_tag_deletes(images: ImageStore) -> None:
    image_id = _import(images, "busybox")
    assert images.remove("busybox") == [{"Untagged": "busybox:latest"}, {"Deleted": image_id},
                                        {"Deleted": DIFF}]
    assert images.meta.list_images() == [] and images.blobs.list() == []
    assert fsck.check(images.meta, images.blobs).clean


def test_remove_one_of_several_tags_only_untags(images: ImageStore) -> None:
    image_id = _import(images, "a")
    images.tag("a", "b")
    assert images.remove("b:latest") == [{"Untagged": "b:latest"}]
    assert images.inspect(image_id).repo_tags == ("a:latest",)
    with pytest.raises(NotFound, match="No such image: b:latest"):
        images.remove("b")


def test_remove_by_id_with_multiple_tags_needs_force(images: ImageStore) -> None:
    image_id = _import(images, "a")
    images.tag("a", "b")
    with pytest.raises(Conflict) as e:
        images.remove(image_id[7:19])
    assert str(e.value) == (f"conflict: unable to delete {short_id(image_id)} (must be forced) - "
                            "image is referenced in multiple repositories")
    assert images.inspect(image_id).repo_tags == ("a:latest", "b:latest")  # nothing changed
    out = images.remove(image_id[7:19], force=True)
    assert out == [{"Untagged": "a:latest"}, {"Untagged": "b:latest"}, {"Deleted": image_id},
                   {"Deleted": DIFF}]


def test_remove_by_id_single_tag(images: ImageStore) -> None:
    image_id = _import(images, "a")
    assert images.remove(image_id)[:2] == [{"Untagged": "a:latest"}, {"Deleted": image_id}]


def test_remove_in_use_by_container(images: ImageStore) -> None:
    image_id = _import(images, "busybox")
    users = {image_id: [CID]}

    def in_use(i: str) -> list[str]:
        return users.get(i, [])

    with pytest.raises(Conflict) as e:
        images.remove("busybox", in_use=in_use)
    assert str(e.value) == ('conflict: unable to remove repository reference "busybox" (must force)'
                            f" - container {CID[:12]} is using its referenced image "
                            f"{short_id(image_id)}")
    with pytest.raises(Conflict, match="must be forced.*stopped container c0ffee"):
        images.remove(image_id, in_use=in_use)
    assert images.inspect(image_id).repo_tags == ("busybox:latest",)
    # with a second tag, removing one is just an untag, even while in use
    images.tag("busybox", "bb")
    assert images.remove("bb", in_use=in_use) == [{"Untagged": "bb:latest"}]
    # forced: a stopped container does not prevent deletion
    out = images.remove("busybox", force=True, in_use=in_use)
    assert {"Deleted": image_id} in out


def test_remove_running_container_is_hard_conflict(images: ImageStore) -> None:
    image_id = _import(images, "busybox")

    def users(i: str) -> list[str]:
        return [CID] if i == image_id else []

    with pytest.raises(Conflict, match=r"\(cannot be forced\) - image is being used by running"):
        images.remove(image_id, force=True, in_use=users, running=users)
    # by name with force: untagged, image kept (moby ignores the conflict quietly)
    assert images.remove("busybox", force=True, in_use=users, running=users) == [
        {"Untagged": "busybox:latest"}]
    assert images.meta.get_image(image_id) is not None


def test_shared_layer_survives(images: ImageStore) -> None:
    a = _import(images, "a")
    b = _import(images, "b")
    assert images.remove("a") == [{"Untagged": "a:latest"}, {"Deleted": a}]
    assert images.blobs.list() == [DIFF]
    assert images.remove("b")[-1] == {"Deleted": DIFF}
    assert images.blobs.list() == [] and images.meta.get_image(b) is None


def test_commit_parent_child_and_prune(images: ImageStore) -> None:
    base = _import(images, "base")
    child = images.commit(io.BytesIO(TAR2), base, {"Cmd": ["sh"]}, reference="child",
                          changes=["ENV X=1"], author="me", comment="c", created_by="sh")
    rec = images.inspect("child")
    assert rec.parent == base and len(rec.diff_ids) == 2 and len(rec.history) == 2
    assert rec.container_config == {"Cmd": ["sh"], "Env": ["X=1"]}
    assert [c for c, _d, _b in images.layer_chain(child)] == list(rec.chain_ids)
    with pytest.raises(Conflict, match=r"\(cannot be forced\) - image has dependent child images"):
        images.remove(base, force=True)
    # untagging the base keeps it (hidden from the default list as an intermediate image)
    assert images.remove("base") == [{"Untagged": "base:latest"}]
    assert [r.id for r in images.list()] == [child]
    assert {r.id for r in images.list(all=True)} == {base, child}
    # removing the child prunes the untagged parent too
    out = images.remove("child")
    assert {"Deleted": child} in out and {"Deleted": base} in out
    assert images.blobs.list() == []


def test_no_prune_keeps_parent(images: ImageStore) -> None:
    base = _import(images)
    images.commit(io.BytesIO(TAR2), base, {}, reference="child")
    images.remove("child", no_prune=True)
    assert images.meta.get_image(base) is not None


def test_prune(images: ImageStore) -> None:
    used = _import(images)
    dangling = _import(images, data=TAR2)
    tagged = _import(images, "keep", data=make_tar({"c": b"3"}))
    res = images.prune(in_use=lambda i: [CID] if i == used else [])
    assert res["ImagesDeleted"] == [{"Deleted": dangling},
                                    {"Deleted": "sha256:" + hashlib.sha256(TAR2).hexdigest()}]
    assert res["SpaceReclaimed"] == len(TAR2)
    res = images.prune(dangling_only=False, in_use=lambda i: [CID] if i == used else [])
    assert {"Deleted": tagged} in res["ImagesDeleted"]
    assert {"Untagged": "keep:latest"} in res["ImagesDeleted"]
    assert [r.id for r in images.list(all=True)] == [used]
    assert fsck.check(images.meta, images.blobs).clean
