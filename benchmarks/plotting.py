"""matplotlib for every benchmark's plots: a headless backend, and one way to save
a figure. Imported only when plotting, so the unit tests need no matplotlib."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (PNG files, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, outdir: Path, name: str) -> Path:
    """Lay out, write outdir/name at 100 dpi, free the figure; the path written."""
    fig.tight_layout()
    path = outdir / name
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path
