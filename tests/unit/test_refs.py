"""Image reference parsing/normalisation and id-prefix resolution (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from engine import refs
from engine.errors import AmbiguousReference, InvalidArgument, NotFound

HEX = "a" * 64
DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("text, domain, path, tag, digest, name, full", [
    ("busybox", "docker.io", "library/busybox", "latest", None, "busybox",
     "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "busybox",
     "docker.io/library/busybox:1.36"),
    ("user/app", "docker.io", "user/app", "latest", None, "user/app", "docker.io/user/app:latest"),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None, "busybox",
     "docker.io/library/busybox:latest"),
    ("index.docker.io/library/busybox:x", "docker.io", "library/busybox", "x", None, "busybox",
     "docker.io/library/busybox:x"),
    ("myreg:5000/a/b", "myreg:5000", "a/b", "latest", None, "myreg:5000/a/b",
     "myreg:5000/a/b:latest"),
    ("localhost/foo:dev", "localhost", "foo", "dev", None, "localhost/foo", "localhost/foo:dev"),
    ("localhost:5000/foo", "localhost:5000", "foo", "latest", None, "localhost:5000/foo",
     "localhost:5000/foo:latest"),
    ("quay.io/org/x__y.z-w", "quay.io", "org/x__y.z-w", "latest", None, "quay.io/org/x__y.z-w",
     "quay.io/org/x__y.z-w:latest"),
    (f"busybox@{DIGEST}", "docker.io", "library/busybox", None, DIGEST, "busybox",
     f"docker.io/library/busybox@{DIGEST}"),
    (f"busybox:1@{DIGEST}", "docker.io", "library/busybox", "1", DIGEST, "busybox",
     f"docker.io/library/busybox:1@{DIGEST}"),
    ("[::1]:5000/foo", "[::1]:5000", "foo", "latest", None, "[::1]:5000/foo",
     "[::1]:5000/foo:latest"),
    ("docker.io/library/a/b", "docker.io", "library/a/b", "latest", None, "library/a/b",
     "docker.io/library/a/b:latest"),
])
def test_parse(text: str, domain: str, path: str, tag: str | None, digest: str | None,
               name: str, full: str) -> None:
    r = refs.parse(text)
    assert (r.domain, r.path, r.tag, r.digest) == (domain, path, tag, digest)
    assert r.name == name
    assert r.full == full
    assert refs.parse(str(r)) == r


def test_str_is_familiar() -> None:
    assert str(refs.parse("busybox")) == "busybox:latest"
    assert str(refs.parse("docker.io/library/busybox:1")) == "busybox:1"
    assert refs.parse("busybox").repository == "docker.io/library/busybox"


def test_no_default_tag() -> None:
    assert refs.parse("busybox", default_tag=False).tag is None


def test_uppercase_message() -> None:
    with pytest.raises(InvalidArgument) as e:
        refs.parse("UPPER:tag")
    assert str(e.value) == ("invalid reference format: repository name (library/UPPER) "
                            "must be lowercase")


@pytest.mark.parametrize("text", [
    "a//b", "", ":tag", "busybox:", "busybox:-x", "busybox:" + "x" * 129, "a/", "/a", "a..b",
    "a/b_", "-a", "busybox@sha256:abc", f"busybox@md5:{'a' * 32}", "busy box", "a:b:c",
    "Foo.com/UP/x", "a" * 256, "x/" + "a" * 260,
])
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidArgument):
        refs.parse(text)


def test_plain_invalid_message() -> None:
    with pytest.raises(InvalidArgument) as e:
        refs.parse("a//b")
    assert str(e.value) == "invalid reference format"


def test_hex64_is_not_a_name() -> None:
    with pytest.raises(InvalidArgument, match="64-byte hexadecimal"):
        refs.parse(HEX)


def test_name_length_limit() -> None:
    ok = "a" * (255 - len("docker.io/library/"))
    assert refs.parse(ok).name == ok
    with pytest.raises(InvalidArgument, match="255"):
        refs.parse(ok + "a")


def test_tag_max_128() -> None:
    assert refs.parse("a:" + "x" * 128).tag == "x" * 128


def test_dotted_first_component_is_a_domain() -> None:
    with pytest.raises(InvalidArgument):
        refs.parse("0.0_0/0")  # "0.0_0" is taken for a domain, and "_" is not allowed there
    assert refs.parse("a.b/c").domain == "a.b"
    # docker.io is kept in the familiar form when dropping it would change the meaning
    r = refs.parse("docker.io/a.b/c")
    assert (r.domain, r.path, r.name) == ("docker.io", "a.b/c", "docker.io/a.b/c")
    assert refs.parse(str(r)) == r


def test_uppercase_domain_is_a_domain() -> None:
    r = refs.parse("FOO/bar")
    assert (r.domain, r.path) == ("FOO", "bar")


def test_with_tag() -> None:
    assert refs.parse(f"a@{DIGEST}").with_tag("v1").full == "docker.io/library/a:v1"
    with pytest.raises(InvalidArgument):
        refs.parse("a").with_tag("-bad")


# -- property tests ----------------------------------------------------------------------------

_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_sep = st.sampled_from([".", "_", "__", "-", "--"])
_component = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    _alnum, st.lists(st.tuples(_sep, _alnum), max_size=2))
_path = st.lists(_component, min_size=1, max_size=3).map("/".join)
_domain = st.one_of(
    st.none(),
    st.just("localhost"),
    st.builds(lambda a, b: f"{a}.{b}", _alnum, st.sampled_from(["com", "io", "Example"])),
    st.builds(lambda a, p: f"{a}:{p}", _alnum, st.integers(1, 65535)),
)
_tag = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")
_digest = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h)


@st.composite
def _refs(draw: st.DrawFn) -> str:
    domain, path = draw(_domain), draw(_path)
    if domain is None and "/" in path and "." in path.split("/")[0]:
        domain = "docker.io"  # else the first component would be taken for a (bad) domain
    text = f"{domain}/{path}" if domain else path
    tag, digest = draw(st.none() | _tag), draw(st.none() | _digest)
    if tag:
        text += ":" + tag
    if digest:
        text += "@" + digest
    return text


@given(_refs())
def test_roundtrip(text: str) -> None:
    try:
        r = refs.parse(text)
    except InvalidArgument as e:
        # only the length limit or an all-hex name may legitimately reject generated input
        assert "255" in str(e) or "hexadecimal" in str(e)
        return
    assert refs.parse(str(r)) == r
    assert refs.parse(r.full) == r
    assert r.full.startswith(r.domain + "/")
    assert r.tag is not None or r.digest is not None


@given(st.text(max_size=40))
def test_parse_never_crashes(text: str) -> None:
    try:
        r = refs.parse(text)
    except InvalidArgument:
        return
    assert refs.parse(str(r)) == r


# -- id prefixes -------------------------------------------------------------------------------

def test_is_id_prefix() -> None:
    assert refs.is_id_prefix("a")
    assert refs.is_id_prefix("sha256:abc")
    assert refs.is_id_prefix(HEX)
    assert not refs.is_id_prefix("")
    assert not refs.is_id_prefix("xyz")
    assert not refs.is_id_prefix("A1")
    assert not refs.is_id_prefix("a" * 65)


def test_resolve_prefix_rules() -> None:
    ids = ["abc1" + "0" * 60, "abc2" + "0" * 60, "def" + "0" * 61]
    assert refs.resolve_prefix(ids, "d") == ids[2]
    assert refs.resolve_prefix(ids, "abc1") == ids[0]
    assert refs.resolve_prefix(ids, ids[1]) == ids[1]
    with pytest.raises(AmbiguousReference):
        refs.resolve_prefix(ids, "abc")
    with pytest.raises(NotFound, match="No such container: fff"):
        refs.resolve_prefix(ids, "fff", what="container")
    with pytest.raises(NotFound):
        refs.resolve_prefix(ids, "")
    with pytest.raises(NotFound):
        refs.resolve_prefix(ids, "not-hex")


def test_resolve_prefix_sha256_forms() -> None:
    ids = ["sha256:" + "ab" * 32]
    assert refs.resolve_prefix(ids, "abab") == ids[0]
    assert refs.resolve_prefix(ids, "sha256:ab") == ids[0]
    assert refs.resolve_prefix(["ab" * 32], "sha256:ab") == "ab" * 32


def test_exact_beats_prefix() -> None:
    # an exact match wins even though it also prefixes another candidate
    assert refs.resolve_prefix(["ab", "abc"], "ab") == "ab"


_ids = st.sets(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), min_size=1,
               max_size=8)


@given(_ids, st.data())
def test_resolve_prefix_properties(ids: set[str], data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(sorted(ids)))
    n = data.draw(st.integers(1, 64))
    prefix = target[:n]
    matching = [i for i in ids if i.startswith(prefix)]
    if len(matching) == 1:
        assert refs.resolve_prefix(ids, prefix) == target
    else:
        with pytest.raises(AmbiguousReference):
            refs.resolve_prefix(ids, prefix)
    # the full id always resolves to itself
    assert refs.resolve_prefix(ids, target) == target
    assert refs.resolve_prefix(ids, "sha256:" + target) == target


@given(_ids, st.text(alphabet="0123456789abcdef", min_size=1, max_size=64))
def test_resolve_prefix_agrees_with_startswith(ids: set[str], prefix: str) -> None:
    matching = {i for i in ids if i.startswith(prefix)}
    if prefix in ids:
        assert refs.resolve_prefix(ids, prefix) == prefix
    elif not matching:
        with pytest.raises(NotFound):
            refs.resolve_prefix(ids, prefix)
    elif len(matching) > 1:
        with pytest.raises(AmbiguousReference):
            refs.resolve_prefix(ids, prefix)
    else:
        assert refs.resolve_prefix(ids, prefix) in matching
