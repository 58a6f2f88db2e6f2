"""A top-down PNG of the world's regions, coloured by lease owner.

Drawn with matplotlib when it is installed (the ``[bench]`` extra: titles, a legend and
object counts in the cells); otherwise with a small built-in PNG writer (numpy + zlib, in
the default install: coloured cells and grid lines, the legend printed to stderr), so
``worldstate inspect map`` works after a plain ``pip install worldstate``."""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Sequence

import numpy as np

from worldstate.store import RegionSummary

PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
)  # fmt: skip
NO_OWNER = (204, 204, 204)

Columns = dict[tuple[int, int], tuple[str | None, int, int]]


def columns(regions: Sequence[RegionSummary], *, z: int | None = None) -> Columns:
    """(ix, iy) → (owner with a live lease or None, objects summed over iz, regions)."""
    cols: Columns = {}
    for r in regions:
        if z is not None and r.key.iz != z:
            continue
        owner, n, k = cols.get((r.key.ix, r.key.iy), (None, 0, 0))
        cols[(r.key.ix, r.key.iy)] = (owner or r.owner, n + r.object_count, k + 1)
    return cols


def render_map(
    regions: Sequence[RegionSummary], out: str, *, z: int | None = None
) -> tuple[int, str]:
    """Draw one square per (ix, iy) column; returns (columns drawn, engine used)."""
    cols = columns(regions, z=z)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        write_png(cols, out)
        return len(cols), "the built-in PNG writer (install matplotlib for labels)"
    _matplotlib(cols, out, z)
    return len(cols), "matplotlib"


def _owners(cols: Columns) -> dict[str, tuple[int, int, int]]:
    owners = sorted({o for o, _, _ in cols.values() if o is not None})
    return {o: PALETTE[i % len(PALETTE)] for i, o in enumerate(owners)}


def write_png(cols: Columns, out: str) -> None:
    """The map as an RGB PNG without matplotlib; prints the colour legend to stderr."""
    colour = _owners(cols)
    if cols:
        xs = [k[0] for k in cols]
        ys = [k[1] for k in cols]
        x0, y0 = min(xs), min(ys)
        w, h = max(xs) - x0 + 1, max(ys) - y0 + 1
    else:
        x0 = y0 = 0
        w = h = 1
    cell = int(max(4, min(40, 800 // max(w, h))))
    img = np.full((h * cell + 1, w * cell + 1, 3), 255, np.uint8)
    for (ix, iy), (owner, _, _) in cols.items():
        cx, cy = ix - x0, (h - 1) - (iy - y0)  # north up
        rgb = colour[owner] if owner is not None else NO_OWNER
        img[cy * cell : (cy + 1) * cell, cx * cell : (cx + 1) * cell] = rgb
    img[::cell, :, :] = 0  # grid lines
    img[:, ::cell, :] = 0
    with open(out, "wb") as f:
        f.write(encode_png(img))
    legend = ", ".join(f"{o} = #{r:02x}{g:02x}{b:02x}" for o, (r, g, b) in colour.items())
    print(f"colours: {legend or '-'}; grey = no live lease", file=sys.stderr)


def encode_png(img: np.ndarray) -> bytes:
    """An 8-bit RGB image (H, W, 3) as PNG bytes."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _matplotlib(cols: Columns, out: str, z: int | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    def rgbf(c: tuple[int, int, int]) -> tuple[float, float, float]:
        return (c[0] / 255, c[1] / 255, c[2] / 255)

    colour = {o: rgbf(rgb) for o, rgb in _owners(cols).items()}
    grey = rgbf(NO_OWNER)
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    for (ix, iy), (owner, n, _) in cols.items():
        ax.add_patch(
            Rectangle(
                (ix, iy),
                1,
                1,
                facecolor=colour[owner] if owner is not None else grey,
                edgecolor="black",
                linewidth=0.3,
            )
        )
        if len(cols) <= 400:
            ax.text(ix + 0.5, iy + 0.5, str(n), ha="center", va="center", fontsize=6)
    if cols:
        xs = [k[0] for k in cols]
        ys = [k[1] for k in cols]
        ax.set_xlim(min(xs) - 0.5, max(xs) + 1.5)
        ax.set_ylim(min(ys) - 0.5, max(ys) + 1.5)
    ax.set_aspect("equal")
    ax.set_xlabel("ix (2 km regions)")
    ax.set_ylabel("iy")
    layer = "all layers" if z is None else f"iz = {z}"
    ax.set_title(f"worldstate regions by owner ({layer}); numbers: objects")
    handles = [Patch(color=colour[o], label=o) for o in colour]
    handles.append(Patch(color=grey, label="no live lease"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
