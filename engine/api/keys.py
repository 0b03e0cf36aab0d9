"""Typed keys for values stored on the aiohttp application."""

from __future__ import annotations

from typing import Any

from aiohttp import web

ENGINE: web.AppKey[Any] = web.AppKey("engine", object)
