"""The bench's picture: read rate per category, one bar per decoder.

Agg backend and a lazy import: the bench runs headless on boards and in CI, and the
rest of the package must not pay for matplotlib at import time.
"""

from __future__ import annotations

from pathlib import Path


def plot_rates(result: dict, path: Path) -> Path:
    """Grouped bars of read rate (%) per category (and overall) per decoder, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    decs = result["decoders"]
    groups = list(result["categories"]) + ["overall"]
    cells = [result["categories"][c] for c in result["categories"]] + [result["overall"]]
    x = np.arange(len(groups))
    width = 0.8 / max(len(decs), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(groups) + 2), 4.5), dpi=110)
    for j, d in enumerate(decs):
        rates = [c[d]["rate"] for c in cells]
        ax.bar(x - 0.4 + width * (j + 0.5), rates, width, label=d)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylabel("codes read (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Decode bench, seed {result['seed']}, {result['per_category']} frames/category")
    ax.grid(axis="y", alpha=0.3)
    # Outside the axes: inside, the legend hides the bars of whichever category it sits on.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
