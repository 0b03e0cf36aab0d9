"""JSON for the CLI's client: ``dumps`` and ``loads`` as ``json`` does them, without importing it.

Why: importing ``json`` costs the CLI ~1.1 ms per start on this class of machine (its decoder,
scanner and encoder compile six regular expressions at import), ~2% of a whole ``wharfie run
--rm``. The parsing and encoding are not written here: both run CPython's own C accelerator
``_json`` (``make_scanner``, ``make_encoder``, ``encode_basestring_ascii``), the code ``json``
itself runs, configured as ``json.loads``/``json.dumps`` configure it by default. Only the
cheap framing around it (leading and trailing whitespace, UTF-8 input) is here. Whatever that
fast path does not handle — input that is not UTF-8 or not valid JSON, objects JSON cannot
encode, an interpreter without ``_json`` — goes to the ``json`` module itself, so results and
errors (``json.JSONDecodeError``, a ``ValueError``; ``TypeError``) are exactly ``json``'s.
"""

from __future__ import annotations

import contextlib
from typing import Any

try:
    import _json
except ImportError:  # an interpreter without the accelerator: json's pure-Python code
    _json = None  # type: ignore[assignment]

_WS = " \t\n\r"  # JSON's insignificant whitespace (what json.decoder's WHITESPACE matches)


class _DecodeContext:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder()``: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


def _not_serializable(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


if _json is not None:
    _scan = _json.make_scanner(_DecodeContext())  # type: ignore[arg-type]  # any object with those attributes
    # json.dumps' defaults (ensure_ascii, ", " and ": ", allow_nan) but no circular check
    # (markers None): a cycle recurses to a RecursionError, and json below reports it as json does
    _encode = _json.make_encoder(None, _not_serializable, _json.encode_basestring_ascii, None, ": ", ", ",
                                 False, False, True)


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``. Raises ``json.JSONDecodeError`` (a ValueError) as it does."""
    if _json is not None:
        with contextlib.suppress(Exception):  # json below gives the exact result or error
            s = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
            start = len(s) - len(s.lstrip(_WS))
            obj, end = _scan(s, start)
            if not s[end:].strip(_WS):
                return obj
    import json

    return json.loads(data)


def dumps(obj: Any) -> str:
    """``json.dumps(obj)``. Raises TypeError (not serializable) and ValueError as it does."""
    if _json is not None:
        with contextlib.suppress(Exception):  # json below gives the exact result or error
            return "".join(_encode(obj, 0))
    import json

    return json.dumps(obj)
