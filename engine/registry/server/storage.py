"""The registry server's storage: a content-addressed blob store plus per-repository links.

Layout under ``root``::

    blobs/sha256/<hex>                        every blob and manifest, verified (engine BlobStore)
    repositories/<name>/_layers/<hex>         the blob is part of <name> (empty file)
    repositories/<name>/_manifests/<hex>      the manifest is part of <name>; holds its media type
    repositories/<name>/_tags/<tag>           the tag's manifest digest
    repositories/<name>/_referrers/<subject hex>/<hex>   a manifest whose ``subject`` is that
                                              digest: its descriptor for the referrers API
    uploads/<uuid>                            an upload session's bytes so far

A blob is only served through a repository that links it, so one repository's content is not
readable through another's name (cross-repository mount links it explicitly). Writes of links
are atomic (temp + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from typing import BinaryIO

from engine.store.blobs import BlobStore

NAME_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
UUID_RE = re.compile(r"^[0-9a-f]{32}$")


class Storage:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.blobs = BlobStore(self.root)
        self.repos = os.path.join(self.root, "repositories")
        self.uploads = os.path.join(self.root, "uploads")
        os.makedirs(self.repos, exist_ok=True)
        os.makedirs(self.uploads, exist_ok=True)

    # -- links ----------------------------------------------------------------------------------

    def _dir(self, name: str, kind: str) -> str:
        return os.path.join(self.repos, name, kind)

    def _write(self, path: str, text: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    def link_blob(self, name: str, digest: str) -> None:
        self._write(os.path.join(self._dir(name, "_layers"), digest[7:]), "")

    def has_blob(self, name: str, digest: str) -> bool:
        return self.blobs.exists(digest) and os.path.exists(os.path.join(self._dir(name, "_layers"), digest[7:]))

    def unlink_blob(self, name: str, digest: str) -> bool:
        try:
            os.unlink(os.path.join(self._dir(name, "_layers"), digest[7:]))
            return True
        except FileNotFoundError:
            return False

    def put_manifest(self, name: str, data: bytes, media_type: str, tag: str | None) -> str | None:
        """Store a (validated) manifest, tag it, and index it as a referrer of its ``subject``.
        Returns the subject's digest (None if it has none)."""
        digest = self.blobs.put_bytes(data)
        self._write(os.path.join(self._dir(name, "_manifests"), digest[7:]), media_type)
        if tag is not None:
            self._write(os.path.join(self._dir(name, "_tags"), tag), digest)
        doc = json.loads(data)
        subject = doc.get("subject") if isinstance(doc, dict) else None
        sdigest = subject.get("digest") if isinstance(subject, dict) else None
        if not isinstance(sdigest, str) or not DIGEST_RE.match(sdigest):
            return None
        desc: dict[str, object] = {"mediaType": media_type, "digest": digest, "size": len(data)}
        artifact = doc.get("artifactType")
        config = doc.get("config")
        if not artifact and "manifests" not in doc and isinstance(config, dict):
            artifact = config.get("mediaType")
        if isinstance(artifact, str) and artifact:
            desc["artifactType"] = artifact
        if isinstance(doc.get("annotations"), dict) and doc["annotations"]:
            desc["annotations"] = doc["annotations"]
        self._write(os.path.join(self._dir(name, "_referrers"), sdigest[7:], digest[7:]), json.dumps(desc))
        return sdigest

    def referrers(self, name: str, subject: str) -> list[dict[str, object]]:
        """Descriptors of ``name``'s manifests whose subject is ``subject`` (deleted ones are
        left out), sorted by digest."""
        d = os.path.join(self._dir(name, "_referrers"), subject[7:])
        out = []
        for entry in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if len(entry) != 64 or not self.has_manifest(name, "sha256:" + entry):
                continue
            with open(os.path.join(d, entry)) as fh:
                out.append(json.load(fh))
        return out

    def resolve(self, name: str, reference: str) -> str | None:
        """A tag or digest → the manifest digest, if ``name`` has it."""
        if DIGEST_RE.match(reference):
            digest = reference
        else:
            try:
                with open(os.path.join(self._dir(name, "_tags"), reference)) as fh:
                    digest = fh.read().strip()
            except (FileNotFoundError, NotADirectoryError):
                return None
        path = os.path.join(self._dir(name, "_manifests"), digest[7:])
        return digest if os.path.exists(path) and self.blobs.exists(digest) else None

    def manifest(self, name: str, digest: str) -> tuple[bytes, str]:
        with open(os.path.join(self._dir(name, "_manifests"), digest[7:])) as fh:
            media_type = fh.read()
        return self.blobs.read_bytes(digest), media_type

    def has_manifest(self, name: str, digest: str) -> bool:
        return os.path.exists(os.path.join(self._dir(name, "_manifests"), digest[7:]))

    def delete_manifest(self, name: str, digest: str) -> bool:
        try:
            os.unlink(os.path.join(self._dir(name, "_manifests"), digest[7:]))
        except FileNotFoundError:
            return False
        for tag in self.tags(name):
            if self.resolve_tag(name, tag) == digest:
                self.delete_tag(name, tag)
        return True

    def resolve_tag(self, name: str, tag: str) -> str | None:
        try:
            with open(os.path.join(self._dir(name, "_tags"), tag)) as fh:
                return fh.read().strip()
        except FileNotFoundError:
            return None

    def delete_tag(self, name: str, tag: str) -> bool:
        try:
            os.unlink(os.path.join(self._dir(name, "_tags"), tag))
            return True
        except FileNotFoundError:
            return False

    def tags(self, name: str) -> list[str]:
        d = self._dir(name, "_tags")
        return sorted(t for t in os.listdir(d) if TAG_RE.match(t)) if os.path.isdir(d) else []

    def has_repo(self, name: str) -> bool:
        return os.path.isdir(os.path.join(self.repos, name, "_manifests")) or \
            os.path.isdir(os.path.join(self.repos, name, "_layers"))

    def catalog(self) -> list[str]:
        out = []
        for dirpath, dirnames, _files in os.walk(self.repos):
            if "_manifests" in dirnames:
                rel = os.path.relpath(dirpath, self.repos).replace(os.sep, "/")
                if NAME_RE.match(rel):
                    out.append(rel)
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(out)

    # -- uploads --------------------------------------------------------------------------------

    def new_upload(self) -> str:
        uid = uuid.uuid4().hex
        open(os.path.join(self.uploads, uid), "xb").close()
        return uid

    def upload_path(self, uid: str) -> str | None:
        if not UUID_RE.match(uid):
            return None
        p = os.path.join(self.uploads, uid)
        return p if os.path.exists(p) else None

    def finish_upload(self, name: str, uid: str, digest: str) -> str | None:
        """Verify and commit upload ``uid`` as blob ``digest`` (blocking: hashes the file).
        Returns None on success, else the digest the content actually has."""
        path = os.path.join(self.uploads, uid)
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        got = "sha256:" + h.hexdigest()
        if got != digest:
            os.unlink(path)
            return got
        self.blobs.adopt(path, digest, os.path.getsize(path))
        self.link_blob(name, digest)
        return None

    def cancel_upload(self, uid: str) -> bool:
        p = self.upload_path(uid)
        if p is None:
            return False
        os.unlink(p)
        return True

    def open_blob(self, digest: str) -> BinaryIO:
        return self.blobs.open(digest)
