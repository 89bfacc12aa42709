"""The α trajectory plot: one line per domain over training steps, and the exported average as a dashed
line of the same colour (what stage 2 trains on), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: recipes run on servers
import matplotlib.pyplot as plt  # noqa: E402

from tandem_components.atomic import save_figure  # noqa: E402


def plot_mixture_trajectory(
    steps: Sequence[int], alphas: Sequence[Sequence[float]], domains: Sequence[str], path: str | Path, title: str,
    average: Sequence[float] | None = None, average_from: int | None = None,
) -> Path:
    """Save a PNG of α_m(step) for every domain m. ``alphas[i]`` is α after the update at ``steps[i]``;
    ``average`` (the exported trajectory average), if given, is drawn dashed in each domain's colour, from
    ``average_from`` (the first step it covers; default the first step) to the end."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for m, domain in enumerate(domains):
        (line,) = ax.plot(steps, [a[m] for a in alphas], label=domain, linewidth=1.6)
        if average is not None:
            start = steps[0] if average_from is None else average_from
            ax.hlines(average[m], start, steps[-1], color=line.get_color(), linestyles="--", linewidth=1, alpha=0.8)
    if average is not None:  # one legend entry for every dashed line
        label = "exported average" if not average_from else f"exported average (steps {average_from}-{steps[-1]})"
        ax.plot([], [], color="black", linestyle="--", linewidth=1, label=label)
    ax.axhline(1.0 / len(domains), color="grey", linestyle=":", linewidth=1, label="uniform")
    ax.set_xlabel("training step")
    ax.set_ylabel("mixture weight α")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
