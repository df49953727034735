"""Instant queries to a deployed stack's Prometheus (its `prometheusUrl` output,
on loopback)."""

from __future__ import annotations

import json
from typing import Any, Mapping
from urllib.parse import quote
from urllib.request import urlopen


def query(outputs: Mapping[str, Any], q: str) -> list[dict[str, Any]]:
    """The result vector of an instant query."""
    with urlopen(f"{outputs['prometheusUrl']}api/v1/query?query={quote(q)}", timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def value(outputs: Mapping[str, Any], q: str) -> float | None:
    """The first sample's value, or None when the query matches nothing."""
    result = query(outputs, q)
    return float(result[0]["value"][1]) if result else None
