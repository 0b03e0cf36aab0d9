"""``load``, step 2: what the spooled archive holds — Docker's ``manifest.json`` or an OCI
image layout (``index.json``, nested indexes narrowed to the host platform) — resolved into
plans (:class:`Plan`): per image its config, its layers (the spooled members, each with the
``diff_id`` its config gives it) and its tags. Every blob a descriptor names must exist with the
size and digest it claims; configs must be valid and name as many ``diff_ids`` as layers.

Raises InvalidArgument naming the member or digest (see :mod:`engine.images.load`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from engine import refs
from engine.errors import InvalidArgument
from engine.images import oci
from engine.images.config import host_platform, parse_config
from engine.images.load_spool import BLOB_RE, LoadLimits, Member, bad
from engine.images.tarscan import TarError, clean_name


@dataclass
class Layer:
    member: Member
    diff_id: str
    media_type: str = oci.DOCKER_LAYER  # as declared (an OCI descriptor's), for a compressed blob


@dataclass
class Plan:
    config: bytes
    image_id: str
    layers: list[Layer]
    tags: list[refs.Reference] = field(default_factory=list)


class Archive:
    def __init__(self, members: dict[str, Member], limits: LoadLimits) -> None:
        self.members = members
        self.limits = limits

    def get(self, name: str, what: str) -> Member:
        """The regular member ``name`` (links followed). Raises InvalidArgument if absent."""
        seen = 0
        key = name
        try:
            key = clean_name(name, name, what)
        except TarError as e:
            raise bad(str(e)) from None
        while True:
            m = self.members.get(key)
            if m is None:
                raise bad(f"{what} {name!r} is missing from the archive")
            if m.link is None:
                return m
            seen += 1
            if seen > 16:
                raise bad(f"{what} {name!r}: too many levels of links")
            key = m.link

    def read_json(self, m: Member, what: str) -> Any:
        return oci.parse_json(self.read(m, what), what)

    def read(self, m: Member, what: str) -> bytes:
        if m.size > self.limits.max_json:
            raise bad(f"{what} {m.name!r} is {m.size} bytes, more than {self.limits.max_json}")
        assert m.path is not None
        with open(m.path, "rb") as fh:
            return fh.read()

    def blob(self, digest: str, size: int | None, what: str) -> Member:
        """The blob ``digest`` of an OCI layout, verified against its digest and size."""
        m = self.get(oci.blob_path(digest), what)
        if m.digest != digest:
            raise bad(f"{what}: blob {digest} has the wrong digest {m.digest} (corrupt)")
        if size is not None and m.size != size:
            raise bad(f"{what}: blob {digest} is {m.size} bytes, its descriptor says {size}")
        return m

    def verify_named(self, m: Member, what: str) -> None:
        """A ``blobs/sha256/<hex>`` member must hash to its name."""
        match = BLOB_RE.match(m.name)
        if match and m.digest != "sha256:" + match.group(1):
            raise bad(f"{what} {m.name!r} has the wrong digest {m.digest} (corrupt)")


def _config_of(arc: Archive, m: Member, what: str) -> tuple[bytes, list[str]]:
    data = arc.read(m, what)
    try:
        doc = parse_config(data)
    except InvalidArgument as e:
        raise bad(f"{what} {m.name!r}: {e}") from None
    return data, list(doc["rootfs"]["diff_ids"])


def _parse_tags(values: Any, what: str) -> list[refs.Reference]:
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise bad(f"{what}: RepoTags must be a list of strings")
    out = []
    for v in values:
        try:
            r = refs.parse(v)
        except InvalidArgument as e:
            raise bad(f"{what}: bad tag {v!r}: {e}") from None
        if r.digest is not None:
            raise bad(f"{what}: tag {v!r} contains a digest")
        out.append(r)
    return out


def _plan_docker(arc: Archive, doc: Any) -> list[Plan]:
    if not isinstance(doc, list):
        raise bad("manifest.json is not a list")
    plans: list[Plan] = []
    for i, item in enumerate(doc):
        what = f"manifest.json entry {i}"
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) \
                or not isinstance(item.get("Layers"), list) \
                or not all(isinstance(x, str) for x in item["Layers"]):
            raise bad(f"{what}: want an object with Config and Layers")
        if item.get("LayerSources"):
            raise bad(f"{what}: foreign (non-distributable) layers are not supported")
        cfg_member = arc.get(item["Config"], f"{what}: config")
        arc.verify_named(cfg_member, "config")
        config, diff_ids = _config_of(arc, cfg_member, "config")
        if len(item["Layers"]) != len(diff_ids):
            raise bad(f"{what} names {len(item['Layers'])} layers but its config has "
                       f"{len(diff_ids)} diff_ids")
        layers = []
        for path, diff_id in zip(item["Layers"], diff_ids):
            m = arc.get(path, f"{what}: layer")
            arc.verify_named(m, "layer")
            layers.append(Layer(m, diff_id))
        plans.append(Plan(config, "sha256:" + hashlib.sha256(config).hexdigest(), layers,
                           _parse_tags(item.get("RepoTags"), what)))
    return plans


def _plan_oci(arc: Archive, doc: Any) -> list[Plan]:
    plans: dict[str, Plan] = {}
    _walk_index(arc, doc, "index.json", plans, None, 0)
    return list(plans.values())


def _walk_index(arc: Archive, doc: Any, what: str, plans: dict[str, Plan], name: str | None,
                depth: int) -> None:
    if depth > 4:
        raise bad(f"{what}: indexes nested too deeply")
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        raise bad(f"{what}: not an image index (no manifests list)")
    descs = doc["manifests"]
    if depth:  # a multi-platform index: keep the host's platform
        host_os, host_arch = host_platform()
        matching = [d for d in descs if isinstance(d, dict) and isinstance(d.get("platform"), dict)
                    and d["platform"].get("os") == host_os
                    and d["platform"].get("architecture") == host_arch]
        if matching:
            descs = matching[:1]
        elif len(descs) > 1:
            raise bad(f"{what}: no manifest for platform {host_os}/{host_arch}")
    for i, d in enumerate(descs):
        dwhat = f"{what} manifest {i}"
        mt, digest, size = oci.check_descriptor(d, dwhat)
        dname = oci.ref_names(d.get("annotations")) or name
        m = arc.blob(digest, size, dwhat)
        child = arc.read_json(m, f"{dwhat} ({digest})")
        if mt in oci.INDEX_TYPES or (not mt and isinstance(child, dict) and "manifests" in child):
            _walk_index(arc, child, f"index {digest}", plans, dname, depth + 1)
            continue
        if mt and mt not in oci.MANIFEST_TYPES:
            continue  # attestations and other artifacts: not images
        plan = plans.get(digest)
        if plan is None:
            plan = plans[digest] = _plan_manifest(arc, child, f"manifest {digest}")
        if dname:
            try:
                r = refs.parse(dname)
            except InvalidArgument as e:
                raise bad(f"{dwhat}: bad image name {dname!r}: {e}") from None
            if r.digest is None and r not in plan.tags:
                plan.tags.append(r)


def _plan_manifest(arc: Archive, doc: Any, what: str) -> Plan:
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise bad(f"{what}: not an image manifest (no layers list)")
    _mt, cdigest, csize = oci.check_descriptor(doc.get("config"), f"{what} config")
    cm = arc.blob(cdigest, csize, f"{what} config")
    config, diff_ids = _config_of(arc, cm, "config")
    if len(doc["layers"]) != len(diff_ids):
        raise bad(f"{what} names {len(doc['layers'])} layers but its config has "
                   f"{len(diff_ids)} diff_ids")
    layers = []
    for i, (d, diff_id) in enumerate(zip(doc["layers"], diff_ids)):
        lmt, ldigest, lsize = oci.check_descriptor(d, f"{what} layer {i}")
        if lmt in oci.FOREIGN_TYPES:
            raise bad(f"{what} layer {ldigest}: non-distributable layers are not supported")
        layers.append(Layer(arc.blob(ldigest, lsize, f"{what} layer {i}"), diff_id, lmt or oci.OCI_LAYER))
    return Plan(config, cdigest, layers)


def plan(arc: Archive) -> list[Plan]:
    """The images of the archive ``arc``. Raises InvalidArgument (see the module docstring)."""
    names = arc.members
    if "manifest.json" in names:
        plans = _plan_docker(arc, arc.read_json(arc.get("manifest.json", "manifest"),
                                                "manifest.json"))
    elif "index.json" in names:
        if oci.OCI_LAYOUT in names:
            layout = arc.read_json(arc.get(oci.OCI_LAYOUT, "layout"), oci.OCI_LAYOUT)
            if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != \
                    oci.OCI_LAYOUT_VERSION:
                raise bad(f"unsupported OCI layout version in {oci.OCI_LAYOUT}")
        plans = _plan_oci(arc, arc.read_json(arc.get("index.json", "index"), "index.json"))
    elif "repositories" in names:
        raise bad("legacy (pre Docker 1.10) archives without manifest.json are not supported")
    else:
        raise bad("neither manifest.json nor index.json found: not a docker or OCI archive")
    if not plans:
        raise bad("the archive holds no image")
    return plans
