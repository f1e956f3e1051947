"""Option parsing shared by the command-line tools."""
from __future__ import annotations

import json
from typing import List, Optional

__all__ = ["parse_kv"]


def parse_kv(items: Optional[List[str]]) -> dict:
    """``["dilation=8", "source=masks"]`` -> ``{"dilation": 8, "source": "masks"}`` (JSON values)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
