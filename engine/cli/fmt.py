"""Output: docker's tables, ``--format`` (table/json/Go templates) and the row contexts of
``ps`` and ``images`` (the fields ``{{.ID}}``, ``{{.Status}}``… a template can name)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import click

from engine.api import humanize
from engine.cli.app import fail
from engine.cli.template import Template, TemplateError

HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "RunningFor": "CREATED", "CreatedAt": "CREATED AT",
    "Status": "STATUS", "Ports": "PORTS", "Names": "NAMES", "Size": "SIZE", "State": "STATE", "Labels": "LABELS",
    "Mounts": "MOUNTS", "Networks": "NETWORKS", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
    "CreatedSince": "CREATED", "Containers": "CONTAINERS", "Name": "NAME", "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
    "Container": "CONTAINER",
}


def short(id_: str, no_trunc: bool = False) -> str:
    bare = id_.split(":", 1)[-1]
    return id_ if no_trunc else bare[:12]


def ellipsis(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def container_row(c: dict[str, Any], no_trunc: bool = False) -> dict[str, Any]:
    cmd = c.get("Command", "")
    labels = c.get("Labels") or {}
    size = ""
    if "SizeRw" in c:
        size = f"{humanize.size(c.get('SizeRw') or 0, 3)} (virtual {humanize.size(c.get('SizeRootFs') or 0, 3)})"
    return {
        "ID": short(c["Id"], no_trunc), "Image": c.get("Image", ""),
        "Command": json.dumps(cmd if no_trunc else ellipsis(cmd, 20), ensure_ascii=False),
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(c.get("Created", 0))),
        "RunningFor": humanize.ago(c.get("Created", 0)), "Ports": "", "State": c.get("State", ""),
        "Status": c.get("Status", ""), "Size": size, "Names": ",".join(n.lstrip("/") for n in c.get("Names") or []),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())), "Mounts": "", "Networks": "",
        "Label": lambda k: labels.get(k, ""), "LocalVolumes": "0",
    }


def image_rows(images: Iterable[dict[str, Any]], no_trunc: bool = False, digests: bool = False) -> list[dict[str, Any]]:
    rows = []
    for i in images:
        tags = i.get("RepoTags") or ["<none>:<none>"]
        for t in tags:
            repo, _, tag = t.rpartition(":")
            if "/" in tag:  # a registry port, no tag
                repo, tag = t, "<none>"
            rows.append({
                "ID": short(i["Id"], no_trunc) if not no_trunc else i["Id"], "Repository": repo, "Tag": tag,
                "Digest": (i.get("RepoDigests") or ["<none>"])[0].rpartition("@")[2],
                "CreatedSince": humanize.ago(i.get("Created", 0)),
                "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(i.get("Created", 0))),
                "Size": humanize.size(i.get("Size", 0), 3), "Containers": "N/A" if i.get("Containers", -1) < 0
                else str(i["Containers"]), "SharedSize": "N/A", "UniqueSize": "N/A",
            })
    return rows


def table(rows: list[list[str]]) -> str:
    """docker's tabwriter: columns padded to the widest cell plus 3 spaces."""
    if not rows:
        return ""
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(len(r) for r in rows))]
    lines = []
    for r in rows:
        cells = [c.ljust(widths[i] + 3) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("".join(cells).rstrip() if not r[-1] else "".join(cells))
    return "\n".join(lines) + "\n"


def render(rows: list[dict[str, Any]], fmt: str | None, default: str, quiet_field: str | None = None,
           quiet: bool = False, headers: dict[str, str] | None = None) -> None:
    """Print rows with ``--format`` (or the default table format)."""
    if quiet and quiet_field:
        for r in rows:
            click.echo(r[quiet_field])
        return
    fmt = fmt or default
    if fmt == "json":
        fmt = "{{json .}}"
    is_table = fmt.startswith("table")
    body = fmt[5:].lstrip() if is_table else fmt
    body = body.replace("\\t", "\t").replace("\\n", "\n")
    try:
        tpl = Template(body)
        lines = []
        if is_table:
            header = Template(body).render(_HeaderCtx(headers or {}))
            lines.append(header.split("\t"))
        for r in rows:
            data = {k: v for k, v in r.items() if not callable(v)} if fmt == "{{json .}}" else r
            lines.append(tpl.render(data).split("\t"))
    except TemplateError as e:
        fail(f"template parsing error: {e}")
    if is_table:
        click.echo(table(lines), nl=False)
    else:
        for line in lines:
            click.echo("\t".join(line))


class _HeaderCtx(dict):  # type: ignore[type-arg]
    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        if key == "Label":
            return lambda k: k.upper()
        return dict.get(self, key) or HEADERS.get(key, key.upper())


def inspect_output(docs: list[Any], fmt: str | None) -> None:
    if not fmt:
        click.echo(json.dumps(docs, indent=4, ensure_ascii=False))
        return
    if fmt == "json":
        fmt = "{{json .}}"
    try:
        tpl = Template(fmt.replace("\\t", "\t").replace("\\n", "\n"))
        for d in docs:
            click.echo(tpl.render(d))
    except TemplateError as e:
        fail(f"template parsing error: {e}")
