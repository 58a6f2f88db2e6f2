"""A top-down PNG of the world's regions, coloured by lease owner (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence

from worldstate.store import RegionSummary


def render_map(regions: Sequence[RegionSummary], out: str, *, z: int | None = None) -> int:
    """Draw one square per (ix, iy) column (summing objects over iz unless ``z`` is given),
    coloured by owner (grey: no live lease); returns the number of regions drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    cols: dict[tuple[int, int], tuple[str | None, int]] = {}
    for r in regions:
        if z is not None and r.key.iz != z:
            continue
        owner, n = cols.get((r.key.ix, r.key.iy), (None, 0))
        cols[(r.key.ix, r.key.iy)] = (owner or r.owner, n + r.object_count)
    owners = sorted({o for o, _ in cols.values() if o is not None})
    cmap = plt.get_cmap("tab20")
    colour = {o: cmap(i % 20) for i, o in enumerate(owners)}
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    for (ix, iy), (owner, n) in cols.items():
        ax.add_patch(
            Rectangle(
                (ix, iy),
                1,
                1,
                facecolor=colour[owner] if owner is not None else (0.8, 0.8, 0.8, 1.0),
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
    handles = [Patch(color=colour[o], label=o) for o in owners]
    handles.append(Patch(color=(0.8, 0.8, 0.8, 1.0), label="no live lease"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return len(cols)
