"""Docker's JSON for images, events, filters and the system endpoints (see ``wire``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.errors import InvalidArgument
from engine.images.config import parse_time

JSON = dict[str, Any]


def parse_filters(text: str | None) -> dict[str, list[str]]:
    """Docker's ``filters`` query parameter, both shapes: ``{"k": ["v"]}`` and ``{"k": {"v": true}}``."""
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        raise InvalidArgument(f"invalid filters: {text!r} is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid filters: expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, val in doc.items():
        if isinstance(val, list) and all(isinstance(v, str) for v in val):
            out[key] = list(val)
        elif isinstance(val, dict):
            out[key] = [k for k, on in val.items() if on]
        elif isinstance(val, str):
            out[key] = [val]
        else:
            raise InvalidArgument(f"invalid filter value for '{key}'")
    return out


def image_created(rec: Any) -> int:
    try:
        return int(parse_time(rec.created))
    except (ValueError, TypeError):
        return 0


def image_list_item(rec: Any, containers: int = -1) -> JSON:
    return {"Id": rec.id, "ParentId": rec.parent or "", "RepoTags": list(rec.repo_tags),
            "RepoDigests": list(rec.repo_digests), "Created": image_created(rec), "Size": rec.size,
            "SharedSize": -1, "VirtualSize": rec.size, "Labels": rec.labels or {}, "Containers": containers}


def image_inspect(rec: Any) -> JSON:
    cfg = dict(rec.container_config)
    return {
        "Id": rec.id, "RepoTags": list(rec.repo_tags), "RepoDigests": list(rec.repo_digests),
        "Parent": rec.parent or "", "Comment": rec.comment, "Created": rec.created,
        "DockerVersion": "", "Author": rec.author, "Config": _config_out(cfg),
        "Architecture": rec.architecture, "Os": rec.os, "Size": rec.size, "VirtualSize": rec.size,
        "GraphDriver": {"Name": "overlay2", "Data": None},
        "RootFS": {"Type": "layers", "Layers": list(rec.diff_ids)},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }


def _config_out(cfg: Mapping[str, Any]) -> JSON:
    base: JSON = {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
                  "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
                  "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
                  "OnBuild": None, "Labels": None}
    base.update(cfg)
    return base


def history(entries: list[Mapping[str, Any]]) -> list[JSON]:
    """``GET /images/{name}/history`` from ``Engine.image_history`` (newest first)."""
    return [{"Id": h["id"], "Created": int(h["created"]), "CreatedBy": h["created_by"],
             "Tags": list(h["tags"]) or None, "Size": int(h["size"]), "Comment": h["comment"]}
            for h in entries]


def load_progress(msg: Mapping[str, Any]) -> JSON:
    """A ``Loading layer`` message with moby's rendered ``progress`` bar added."""
    from engine.api.humanize import progress_bar

    doc: JSON = dict(msg)
    detail = msg.get("progressDetail") or {}
    if detail:
        doc["progress"] = progress_bar(int(detail.get("current", 0)), int(detail.get("total", 0)))
    return doc


def loaded(name: str) -> JSON:
    """``Loaded image: busybox:latest`` for a tag, ``Loaded image ID: sha256:…`` for an id."""
    if name.startswith("sha256:") and ":" not in name[7:]:
        return {"stream": f"Loaded image ID: {name}\n"}
    return {"stream": f"Loaded image: {name}\n"}


def stream_error(message: str) -> JSON:
    """An error told in-band, once a streamed response has started (moby ``FormatError``)."""
    return {"errorDetail": {"message": message}, "error": message}


_KINDS = {"C": 0, "A": 1, "D": 2}


def changes(items: list[tuple[str, str]]) -> list[JSON]:
    """``GET /containers/{id}/changes``: Kind 0 modified, 1 added, 2 deleted."""
    return [{"Path": path, "Kind": _KINDS[kind]} for kind, path in items]


def path_stat_header(st: Mapping[str, Any]) -> str:
    """``X-Docker-Container-Path-Stat``: base64 of moby's ``PathStat`` JSON (Go file mode bits)."""
    import base64

    from engine.images.container_fs import go_file_mode

    doc = {"name": st["name"], "size": st["size"], "mode": go_file_mode(st["kind"], st["mode"]),
           "mtime": st["mtime"], "linkTarget": st["link_target"]}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def commit_changes(body: Any) -> list[str]:
    """``POST /commit``'s optional body (a container ``Config``) as ``--change`` lines, applied
    before the query's ``changes``. Fields a commit cannot record (Hostname, Tty…) are ignored."""
    if body is None or body == {}:
        return []
    if not isinstance(body, dict):
        raise InvalidArgument("invalid commit config: expected a JSON object")

    def q(text: Any) -> str:
        return json.dumps(str(text), ensure_ascii=False)

    out: list[str] = []
    for key, instr in (("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")):
        val = body.get(key)
        if isinstance(val, str):
            val = [val]
        if isinstance(val, list) and val and all(isinstance(v, str) for v in val):
            out.append(f"{instr} {json.dumps(val, ensure_ascii=False)}")
    for item in body.get("Env") or []:
        if isinstance(item, str) and "=" in item:
            k, _, v = item.partition("=")
            out.append(f"ENV {k}={q(v)}")
    labels = body.get("Labels")
    if isinstance(labels, dict):
        out += [f"LABEL {q(k)}={q(v)}" for k, v in labels.items()]
    for key, instr in (("WorkingDir", "WORKDIR"), ("User", "USER"), ("StopSignal", "STOPSIGNAL")):
        if isinstance(body.get(key), str) and body[key]:
            out.append(f"{instr} {body[key]}")
    for key, instr in (("ExposedPorts", "EXPOSE"), ("Volumes", "VOLUME")):
        if isinstance(body.get(key), dict) and body[key]:
            out.append(f"{instr} {' '.join(str(k) for k in body[key])}")
    return out


def disk_usage(df: Mapping[str, Any], containers: list[JSON]) -> JSON:
    """``GET /system/df`` from ``Engine.system_df``; ``containers`` are ``wire.list_item``s.
    ``LogsSize`` (top level and per container) is wharfie's addition."""
    by_id = {c["id"]: c for c in df["containers"]}
    for item in containers:
        c = by_id.get(item["Id"])
        if c is not None:
            item["SizeRw"], item["SizeRootFs"], item["LogsSize"] = \
                c["size_rw"], c["size_root_fs"], c["logs_size"]
    images = [{"Id": i["id"], "ParentId": "", "RepoTags": list(i["repo_tags"]),
               "RepoDigests": list(i["repo_digests"]), "Created": image_created_text(i["created"]),
               "Size": i["size"], "SharedSize": i["shared_size"], "VirtualSize": i["size"],
               "Labels": i["labels"] or {}, "Containers": i["containers"]} for i in df["images"]]
    return {"LayersSize": df["layers_size"], "Images": images, "Containers": containers,
            "Volumes": [], "BuildCache": [], "LogsSize": df["logs_size"]}


def image_created_text(text: Any) -> int:
    try:
        return int(parse_time(str(text)))
    except (ValueError, TypeError):
        return 0


def event(ev: Any) -> JSON:
    """Docker's event message, with the legacy ``status``/``id``/``from`` fields for containers."""
    doc: JSON = {"Type": ev.type, "Action": ev.action,
                 "Actor": {"ID": ev.actor_id, "Attributes": dict(ev.attributes)},
                 "scope": ev.scope, "time": int(ev.time), "timeNano": int(ev.time * 1e9)}
    if ev.type in ("container", "image"):
        doc["status"], doc["id"] = ev.action, ev.actor_id
        if ev.type == "container" and "image" in ev.attributes:
            doc["from"] = ev.attributes["image"]
    return doc


def parse_time_param(text: str | None, now: float) -> float | None:
    """``since``/``until``: unix seconds (``"1700000000"``, ``"1700000000.5"``), RFC 3339, or a
    Go duration relative to now (``"10m"``, ``"1h30m"``)."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except (ValueError, TypeError):
        pass
    return now - parse_duration(text)


def parse_duration(text: str) -> float:
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidArgument(f"invalid time or duration: {text!r}")
    mult = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * mult[u] for n, u in parts)


def version(v: Mapping[str, Any]) -> JSON:
    return {
        "Platform": {"Name": "wharfie"},
        "Components": [{"Name": "Engine", "Version": v["version"],
                        "Details": {"ApiVersion": v["api_version"], "MinAPIVersion": v["min_api_version"],
                                    "Backend": v["backend"], "Os": v["os"], "Arch": v["arch"],
                                    "KernelVersion": v["kernel_version"], "Python": v["python"]}}],
        "Version": v["version"], "ApiVersion": v["api_version"], "MinAPIVersion": v["min_api_version"],
        "GitCommit": "wharfie", "GoVersion": "python" + v["python"], "Os": v["os"], "Arch": v["arch"],
        "KernelVersion": v["kernel_version"], "BuildTime": "",
    }


def info(i: Mapping[str, Any], hostname: str) -> JSON:
    return {
        "ID": "wharfie", "Containers": i["containers"], "ContainersRunning": i["running"],
        "ContainersPaused": i["paused"], "ContainersStopped": i["stopped"], "Images": i["images"],
        "Driver": "overlay2" if i["backend"] == "linux" else "sim", "DriverStatus": [["Backend", i["backend"]]],
        "Plugins": {"Volume": [], "Network": ["none"], "Authorization": None, "Log": ["json-file"]},
        "MemoryLimit": True, "SwapLimit": False, "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": True,
        "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": False, "Debug": False, "NFd": 0,
        "OomKillDisable": False, "NGoroutines": 0, "SystemTime": "", "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs", "CgroupVersion": str(i["cgroup_version"]), "NEventsListener": 0,
        "KernelVersion": i["kernel_version"], "OperatingSystem": i["os"], "OSVersion": "", "OSType": "linux",
        "Architecture": {"amd64": "x86_64", "arm64": "aarch64"}.get(i["arch"], i["arch"]),
        "IndexServerAddress": "https://index.docker.io/v1/", "RegistryConfig": None, "NCPU": i["cpus"],
        "MemTotal": i["memory"], "DockerRootDir": i["root"], "Name": hostname, "Labels": [],
        "ExperimentalBuild": False, "ServerVersion": i["version"], "Runtimes": {"wharfie": {"path": "wharfie"}},
        "DefaultRuntime": "wharfie", "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                                               "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "", "SecurityOptions": [],
        "Warnings": [f"WARNING: wharfie is running the {i['backend']} backend"] if i["backend"] == "sim" else [],
    }
