"""Image references (``docker.io/library/busybox:latest``) and id-prefix lookup.

The grammar is the distribution/reference one (``github.com/distribution/reference``)::

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain "/"] path
    domain           := host [":" port]
    host             := domain-name | "[" ipv6 "]"
    path             := path-component ["/" path-component]*
    path-component   := [a-z0-9]+ (([._]|__|[-]+) [a-z0-9]+)*
    tag              := [\\w][\\w.-]{0,127}
    digest           := "sha256:" 64 lowercase hex   (the only algorithm we accept)

Normalisation follows Docker's ``ParseNormalizedNamed``: the first component is a domain only
if it contains ``.`` or ``:`` or is ``localhost`` (or has upper-case letters, which then fails);
otherwise the domain is ``docker.io`` and single-component paths get ``library/``.
``index.docker.io`` is folded into ``docker.io``. A reference with neither tag nor digest gets
``latest``.

Vocabulary: ``reference`` is an image name; ``ref`` is user input that may also be an id, a
name or an id prefix (see :func:`resolve_prefix`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.errors import AmbiguousReference, InvalidArgument, NotFound

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$", re.ASCII)
_NAME_RE = re.compile(rf"^(?:({_DOMAIN})/)?({_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)$", re.ASCII)
_TAG_RE = re.compile(rf"^{_TAG}$", re.ASCII)
_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_ID_PREFIX_RE = re.compile(r"^(?:sha256:)?[0-9a-f]{1,64}$")

INVALID = "invalid reference format"


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed, normalised image reference.

    ``domain`` is e.g. ``"docker.io"`` or ``"myreg:5000"``; ``path`` is e.g. ``"library/busybox"``;
    ``tag`` is None only when a digest was given without a tag.
    """

    domain: str
    path: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None

    @property
    def repository(self) -> str:
        """Fully qualified name without tag/digest: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def name(self) -> str:
        """Familiar name without tag/digest: ``busybox``, ``user/app``, ``myreg:5000/a/b``."""
        if self.domain == DEFAULT_DOMAIN:
            if self.path.startswith(OFFICIAL_PREFIX) and self.path.count("/") == 1:
                return self.path[len(OFFICIAL_PREFIX):]
            first = self.path.split("/", 1)[0]
            # unlike moby, keep docker.io when dropping it would make the first path component
            # read as a domain ("docker.io/a.b/c"), so that parse(str(ref)) == ref always holds
            if "/" not in self.path or not _looks_like_domain(first):
                return self.path
        return self.repository

    @property
    def full(self) -> str:
        """Normalised string: ``docker.io/library/busybox:latest`` (plus ``@digest`` if any)."""
        return self.repository + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        """The same repository with ``tag`` (and no digest). Raises InvalidArgument."""
        if not _TAG_RE.match(tag):
            raise InvalidArgument(f"invalid tag format: {tag!r}")
        return Reference(self.domain, self.path, tag, None)

    def _suffix(self) -> str:
        out = f":{self.tag}" if self.tag is not None else ""
        return out + (f"@{self.digest}" if self.digest is not None else "")

    def __str__(self) -> str:
        """Familiar string with tag/digest: ``busybox:latest``."""
        return self.name + self._suffix()


def _looks_like_domain(first: str) -> bool:
    return any(c in first for c in ".:") or first == "localhost" or first.lower() != first


def _split_docker_domain(text: str) -> tuple[str, str]:
    i = text.find("/")
    first = text[:i] if i >= 0 else ""
    if i == -1 or not _looks_like_domain(first):
        domain, remainder = DEFAULT_DOMAIN, text
    else:
        domain, remainder = first, text[i + 1:]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise an image reference the way the docker CLI and daemon do.

    Args:
        text: user input such as ``busybox``, ``busybox:1.36``, ``myreg:5000/a/b@sha256:…``.
        default_tag: add ``latest`` when neither tag nor digest is given.

    Returns:
        The normalised :class:`Reference`.

    Raises:
        InvalidArgument: "invalid reference format" (with Docker's detail where it has one).
    """
    if not isinstance(text, str) or text == "":
        raise InvalidArgument(f"{INVALID}: repository name must have at least one component")
    if _HEX64_RE.match(text):
        raise InvalidArgument(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(text)
    # the tag separator is the first ':' of the remainder (ports live in the domain part)
    at = remainder.find("@")
    name_part = remainder if at < 0 else remainder[:at]
    remote = name_part.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidArgument(f"{INVALID}: repository name ({remote}) must be lowercase")
    full = f"{domain}/{remainder}"
    m = _REFERENCE_RE.match(full)
    if m is None:
        raise InvalidArgument(INVALID)
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(
            f"{INVALID}: repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest is not None and not _SHA256_RE.match(digest):
        raise InvalidArgument(f"{INVALID}: unsupported digest {digest!r} (only sha256 with 64 "
                              "lowercase hex digits)")
    nm = _NAME_RE.match(name)
    if nm is None or nm.group(1) is None:  # cannot happen: domain was prepended above
        raise InvalidArgument(INVALID)
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(nm.group(1), nm.group(2), tag, digest)


def try_parse(text: str) -> Reference | None:
    """:func:`parse`, or None instead of raising."""
    try:
        return parse(text)
    except InvalidArgument:
        return None


def is_id_prefix(text: str) -> bool:
    """True if ``text`` could be an id or id prefix: 1-64 lowercase hex, optionally ``sha256:``."""
    return bool(_ID_PREFIX_RE.match(text))


def is_full_id(text: str) -> bool:
    """True for a full 64-hex id, with or without ``sha256:``."""
    return bool(_HEX64_RE.match(text.removeprefix("sha256:")))


def _bare(text: str) -> str:
    return text.removeprefix("sha256:")


def resolve_prefix(candidates: Iterable[str], ref: str, *, what: str = "object") -> str:
    """Resolve a full id or a unique id prefix among ``candidates``.

    Candidates and ``ref`` may carry a ``sha256:`` prefix; it is ignored for matching and the
    candidate is returned as given. An exact match wins even if it also prefixes another.

    Args:
        candidates: full ids (``"3f2a…"`` or ``"sha256:3f2a…"``).
        ref: user input.
        what: noun for messages ("container", "image").

    Returns:
        The matching candidate.

    Raises:
        NotFound: "No such {what}: {ref}" when nothing matches (or ``ref`` is not hex).
        AmbiguousReference: when the prefix matches more than one candidate.
    """
    if not is_id_prefix(ref):
        raise NotFound(f"No such {what}: {ref}")
    want = _bare(ref)
    matches: list[str] = []
    for cand in candidates:
        bare = _bare(cand)
        if bare == want:
            return cand
        if bare.startswith(want):
            matches.append(cand)
    if not matches:
        raise NotFound(f"No such {what}: {ref}")
    if len(set(matches)) > 1:
        # moby's message for containers (daemon.GetContainer)
        raise AmbiguousReference(f"multiple IDs found with provided prefix: {ref}")
    return matches[0]


def short_id(id_: str) -> str:
    """Docker's 12-character truncated id, without ``sha256:``."""
    return _bare(id_)[:12]
