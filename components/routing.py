"""Routing table: which endpoints nginx sends to which worker class.

PLACEHOLDER: being written (routing issue). The worker table imports the
per-class route tuples from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    pattern: str


CLIENT_SYNC_ROUTES: tuple[Route, ...] = ()
FEDERATION_READER_ROUTES: tuple[Route, ...] = ()
MEDIA_ROUTES: tuple[Route, ...] = ()
ROOMS_ROUTES: tuple[Route, ...] = ()
