"""Credentials in Docker's ``config.json`` format: ``{"auths": {"<server>": {"auth":
base64("user:password")}}}`` (``identitytoken`` too). Credential helpers (``credsStore``) are not
supported; their entries are left untouched when the file is rewritten."""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from dataclasses import dataclass

from engine.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password, or an identity token (an OAuth refresh token)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


def _load(path: str) -> dict[str, object]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"cannot read credentials file {path}: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"cannot read credentials file {path}: not a JSON object")
    return doc


def lookup(path: str, key: str) -> Credentials | None:
    """The credentials stored for ``key`` (see ``endpoints.auth_key``), or None."""
    auths = _load(path).get("auths")
    if not isinstance(auths, dict):
        return None
    entry = auths.get(key)
    if entry is None:  # entries written with a scheme ("https://host") by other tools
        for k, v in auths.items():
            if isinstance(k, str) and k.split("://", 1)[-1].rstrip("/") == key:
                entry = v
                break
    if not isinstance(entry, dict):
        return None
    token = entry.get("identitytoken") or ""
    raw = entry.get("auth") or ""
    user, pw = str(entry.get("username") or ""), str(entry.get("password") or "")
    if raw:
        try:
            user, _, pw = base64.b64decode(str(raw), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument(f"invalid auth entry for {key} in {path}") from None
    creds = Credentials(user, pw, str(token))
    return None if creds.empty else creds


def store(path: str, key: str, creds: Credentials) -> None:
    """Save ``creds`` under ``key`` (atomically, mode 0600)."""
    doc = _load(path)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    entry: dict[str, str] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    if creds.identity_token:
        entry = {"identitytoken": creds.identity_token}
    auths[key] = entry
    doc["auths"] = auths
    _write(path, doc)


def erase(path: str, key: str) -> bool:
    """Forget the credentials for ``key``; False if there were none."""
    doc = _load(path)
    auths = doc.get("auths")
    if not isinstance(auths, dict) or key not in auths:
        return False
    del auths[key]
    _write(path, doc)
    return True


def _write(path: str, doc: dict[str, object]) -> None:
    d = os.path.dirname(path) or "."
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent="\t")
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def decode_registry_auth(header: str) -> Credentials | None:
    """The API's ``X-Registry-Auth`` header: base64url JSON ``{username, password,
    serveraddress}`` or ``{identitytoken}``. Empty or ``{}`` means anonymous. Raises
    InvalidArgument for garbage."""
    if not header:
        return None
    text = header.strip()
    pad = "=" * (-len(text) % 4)
    try:
        raw = base64.urlsafe_b64decode(text + pad)
        doc = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument("invalid X-Registry-Auth header: not base64-encoded JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid X-Registry-Auth header: not a JSON object")
    creds = Credentials(str(doc.get("username") or ""), str(doc.get("password") or ""),
                        str(doc.get("identitytoken") or ""))
    return None if creds.empty else creds


def encode_registry_auth(creds: Credentials, server: str = "") -> str:
    doc = {"username": creds.username, "password": creds.password, "serveraddress": server}
    if creds.identity_token:
        doc = {"identitytoken": creds.identity_token, "serveraddress": server}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
