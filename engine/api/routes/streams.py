"""Streaming container endpoints: logs, stats, attach (hijacked)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp import web

from engine.api import wire
from engine.api.keys import ENGINE
from engine.api.params import q_bool, q_str, ref
from engine.api.streams import MULTIPLEXED, RAW, Hijack, frame, ndjson_response, send_json_line
from engine.api.wire_images import parse_time_param
from engine.errors import InvalidArgument

STATS_INTERVAL = 1.0
DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q


def _tail(request: web.Request) -> int | None:
    text = q_str(request, "tail", "all")
    if text in ("all", ""):
        return None
    try:
        n = int(text)
    except ValueError:
        raise InvalidArgument(f"invalid value for tail: {text!r}") from None
    return None if n < 0 else n


async def logs(request: web.Request) -> web.StreamResponse:
    e = request.app[ENGINE]
    c = e.container_inspect(ref(request))
    stdout, stderr = q_bool(request, "stdout"), q_bool(request, "stderr")
    if not (stdout or stderr):
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    now = time.time()
    since = parse_time_param(q_str(request, "since") or None, now)
    until = parse_time_param(q_str(request, "until") or None, now)
    stamps, tty = q_bool(request, "timestamps"), c.spec.tty
    entries = e.container_logs(c.id, stdout=stdout, stderr=stderr, since=since or None, until=until,
                               tail=_tail(request), follow=q_bool(request, "follow"))
    resp = web.StreamResponse(headers={"Content-Type": RAW if tty else MULTIPLEXED})
    await resp.prepare(request)
    try:
        async for entry in entries:
            data = (entry.time_text.encode() + b" " + entry.data) if stamps else entry.data
            await resp.write(data if tty else frame(1 if entry.stream == "stdout" else 2, data))
    except (ConnectionResetError, asyncio.CancelledError):
        return resp
    finally:
        await entries.aclose()
    await resp.write_eof()
    return resp


async def stats(request: web.Request) -> web.StreamResponse:
    e = request.app[ENGINE]
    c = e.container_inspect(ref(request))
    stream = q_bool(request, "stream", True)
    one_shot = q_bool(request, "one-shot")
    resp = await ndjson_response(request)
    prev = None
    try:
        if not stream and not one_shot:
            prev = await e.container_stats(c.id)
            await asyncio.sleep(0.1)
        while True:
            cur = await e.container_stats(c.id)
            await send_json_line(resp, wire.stats(cur, prev, c))
            if not stream:
                break
            prev = cur
            await asyncio.sleep(STATS_INTERVAL)
            if c.state.status.value not in ("running", "paused", "restarting"):
                cur = await e.container_stats(c.id)
                await send_json_line(resp, wire.stats(cur, prev, c))
                break
    except (ConnectionResetError, asyncio.CancelledError):
        return resp
    await resp.write_eof()
    return resp


async def session(hj: Hijack, att: Any, tty: bool, stdin: bool, detach_keys: bytes) -> None:
    """Run one attach session: output to the client, client input to the process.

    Ends when the output ends (the process exited), the client goes away, or the client types
    the detach keys (the process keeps running).
    """

    async def pump_out() -> None:
        async for fd, data in att.output():
            await hj.write(data if tty else frame(fd, data))

    async def pump_in() -> None:
        pending = b""
        while True:
            data = await hj.read()
            if data is None:
                if stdin:
                    await att.end_input()
                return
            if not stdin:
                continue  # not forwarding: only noticing a client that goes away
            if detach_keys:
                buf = pending + data
                if detach_keys in buf:
                    before = buf.split(detach_keys, 1)[0]
                    if before:
                        await att.write(before)
                    raise _Detached
                keep = next((n for n in range(len(detach_keys) - 1, 0, -1) if buf.endswith(detach_keys[:n])), 0)
                data, pending = (buf[:-keep], buf[-keep:]) if keep else (buf, b"")
            if data:
                await att.write(data)

    out = asyncio.ensure_future(pump_out())
    inp = asyncio.ensure_future(pump_in())
    waits: set[asyncio.Future[Any]] = {out}
    if hj.proto is not None:
        waits.add(hj.proto.lost)
    try:
        while out not in (done := (await asyncio.wait(waits | {inp} if not inp.done() else waits,
                                                      return_when=asyncio.FIRST_COMPLETED))[0]):
            if hj.proto is not None and hj.proto.lost in done:
                break
            if inp in done and isinstance(inp.exception(), _Detached):
                break
        if out.done() and not out.cancelled():
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                out.result()
    finally:
        att.close()
        for t in (inp, out):
            if not t.done():
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        hj.close()


class _Detached(Exception):
    """The client typed the detach keys."""


def parse_detach_keys(text: str) -> bytes:
    """Docker's ``--detach-keys`` syntax: "ctrl-p,ctrl-q", "a,b"; "" means the default."""
    if not text:
        return DETACH_KEYS
    out = bytearray()
    for part in text.split(","):
        p = part.strip().lower()
        if p.startswith("ctrl-") and len(p) == 6 and ("a" <= p[5] <= "z" or p[5] in "@[\\]^_"):
            out.append(ord(p[5].upper()) & 0x1F)
        elif len(part) == 1:
            out.append(ord(part))
        else:
            raise InvalidArgument(f"Invalid detach keys ({text}) provided")
    return bytes(out)


async def attach(request: web.Request) -> web.StreamResponse:
    e = request.app[ENGINE]
    c = e.container_inspect(ref(request))
    stdin, stdout, stderr = q_bool(request, "stdin"), q_bool(request, "stdout"), q_bool(request, "stderr")
    logs_, stream = q_bool(request, "logs"), q_bool(request, "stream")
    keys = parse_detach_keys(q_str(request, "detachKeys"))
    att = e.container_attach(c.id, stdout=stdout, stderr=stderr, logs=logs_, stdin_once=c.spec.stdin_once)
    if not stream:
        att.close()
    hj = await Hijack.start(request, RAW if c.spec.tty else MULTIPLEXED)
    await session(hj, att, c.spec.tty, stdin and c.spec.open_stdin, keys)
    return hj.response
