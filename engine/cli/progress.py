"""Docker's rendering of NDJSON progress streams (``docker load``): on a terminal one line per
layer id, redrawn in place with a bar sized to the terminal (jsonmessage
``DisplayJSONMessagesStream``); otherwise plain lines, one per finished layer."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from engine.api.humanize import progress_bar, size
from engine.cli.app import engine_error_message, fail


class _Lines:
    """The terminal renderer: every id keeps its line; a message without an id starts afresh."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.ids: dict[str, int] = {}
        self.width = shutil.get_terminal_size((200, 24)).columns

    def show(self, doc: dict[str, Any]) -> None:
        ident = doc.get("id") or ""
        detail = doc.get("progressDetail") or {}
        w = self.out.write
        diff = 0
        if ident and (detail or doc.get("progress")):
            line = self.ids.get(ident)
            if line is None:
                line = self.ids[ident] = len(self.ids)
                w("\n")
            diff = len(self.ids) - line
            w(f"\x1b[{diff}A")
        else:
            self.ids = {}
        bar = progress_bar(int(detail.get("current", 0)), int(detail.get("total", 0)), self.width) \
            if detail else doc.get("progress", "")
        w("\x1b[2K\r")
        if "stream" in doc:
            w(doc["stream"])
        else:
            w(f"{ident + ': ' if ident else ''}{doc.get('status', '')} {bar}\r")
        if diff:
            w(f"\x1b[{diff}B")
        self.out.flush()


def render(docs: Iterable[dict[str, Any]], tty: bool | None = None, out: TextIO | None = None) -> None:
    """Print a progress stream; an in-band ``error`` ends the CLI with docker's message."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    lines = _Lines(out) if tty else None
    done: set[str] = set()
    for doc in docs:
        if doc.get("error") or doc.get("errorDetail"):
            msg = doc.get("error") or (doc.get("errorDetail") or {}).get("message", "")
            fail(engine_error_message(Exception(msg)), 1)
        if lines is not None:
            lines.show(doc)
            continue
        detail = doc.get("progressDetail") or {}
        ident = doc.get("id") or ""
        if "stream" in doc:
            out.write(doc["stream"])
        elif detail:
            if detail.get("current", 0) >= detail.get("total", 0) > 0 and ident not in done:
                done.add(ident)
                out.write(f"{ident}: {doc.get('status', '')} {size(detail['total'])}\n")
        elif doc.get("status"):
            out.write(f"{ident + ': ' if ident else ''}{doc['status']}\n")
        out.flush()
