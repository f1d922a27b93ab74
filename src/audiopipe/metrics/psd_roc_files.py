"""PSD-ROC curve files: the long CSV `dvc plots` reads (curve, efpr, tpr) and a PNG of the staircase curves.

The curves are `PSDSResult`s from `audiopipe.metrics.sed` (eFPR per hour, effective TPR, PSDS value).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audiopipe.metrics.sed import PSDSResult


def write_roc_csv(path: Path, rocs: Mapping[str, PSDSResult]) -> None:
    """PSD-ROC points as a long CSV (curve, efpr, tpr) for `dvc plots`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["curve", "efpr", "tpr"])
        for name, roc in rocs.items():
            for x, y in zip(roc.efpr, roc.tpr):
                writer.writerow([name, f"{x:.6g}", f"{y:.6g}"])


def plot_roc(path: Path, rocs: Mapping[str, PSDSResult], title: str = "PSD-ROC") -> None:
    """PNG of the PSD-ROC staircase curves, PSDS values in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, roc in rocs.items():
        ax.step(roc.efpr, roc.tpr, where="post", label=f"{name} = {roc.value:.3f}")
    ax.set(xlabel="eFPR per hour", ylabel="effective TPR", title=title, ylim=(0, 1.02))
    ax.legend(loc="upper left", fontsize="small")  # the curves of an early model hug the bottom
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
