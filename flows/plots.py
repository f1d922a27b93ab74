"""DVC plots rendered offline: `dvc plots show/diff --json` -> one PNG per plot + an index.html without any CDN.

    python flows/plots.py                    # workspace curves -> dvc_plots/index.html (make plots)
    python flows/plots.py main               # workspace against the `main` baseline (dvc plots diff main)
    python flows/plots.py HEAD~1 HEAD --out /tmp/plots

`dvc plots show` writes an HTML page that loads Vega from cdn.jsdelivr.net, so it is blank without internet.
This script asks DVC for the same plot data (the x/y columns named in dvc.yaml, one series per revision) and
draws it with matplotlib; the page only references the PNGs next to it.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _fields(spec: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(x, y) field names of a DVC vega-lite plot spec (y sits in a nested layer of DVC's templates)."""
    x = spec.get("encoding", {}).get("x", {}).get("field")
    y = spec.get("encoding", {}).get("y", {}).get("field")
    for layer in spec.get("layer", []):
        lx, ly = _fields(layer)
        x, y = x or lx, y or ly
        if x and y:
            break
    return x, y


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def render(plots: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Draw every vega plot of `dvc plots ... --json` output (`{"data": {plot_id: [...]}}`); returns the PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    pngs: list[Path] = []
    rows = []
    for plot_id, entries in sorted(plots.get("data", {}).items()):
        for index, entry in enumerate(entries):
            if entry.get("type") != "vega":
                continue
            spec = entry["content"]
            x, y = _fields(spec)
            if not (x and y):
                continue
            series: dict[str, tuple[list[float], list[float]]] = {}
            for row in spec.get("data", {}).get("values", []):
                xv, yv = _number(row.get(x)), _number(row.get(y))
                if xv is not None and yv is not None:
                    xs, ys = series.setdefault(str(row.get("rev", "workspace")), ([], []))
                    xs.append(xv)
                    ys.append(yv)
            fig, ax = plt.subplots(figsize=(5, 3.2))
            for rev, (xs, ys) in series.items():
                ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=rev)
            ax.set(xlabel=x, ylabel=y, title=plot_id)
            ax.title.set_fontsize(9)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{plot_id}_{index}") + ".png"
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=110)
            plt.close(fig)
            pngs.append(out_dir / name)
            empty = "" if series else " (no numeric data)"
            rows.append(f'<figure><img src="{html.escape(name)}" alt="{html.escape(plot_id)}">'
                        f"<figcaption>{html.escape(plot_id)}: {html.escape(y)} over {html.escape(x)}{empty}"
                        "</figcaption></figure>")
    page = ("<!doctype html><meta charset='utf-8'><title>DVC plots</title>"
            "<style>body{font-family:sans-serif}figure{display:inline-block;margin:8px}</style>"
            "<h1>DVC plots</h1>\n" + "\n".join(rows) + "\n")
    (out_dir / "index.html").write_text(page)
    return pngs


def dvc_plots_json(revisions: list[str], repo: Path) -> dict[str, Any]:
    args = ["diff", *revisions] if revisions else ["show"]
    out = subprocess.run([sys.executable, "-m", "dvc", "plots", *args, "--json"], cwd=repo, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"dvc plots {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="*", help="git revisions to compare with the workspace (dvc plots diff)")
    parser.add_argument("--out", type=Path, default=Path("dvc_plots"), help="output folder (default: %(default)s)")
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository root (default: cwd)")
    args = parser.parse_args()
    pngs = render(dvc_plots_json(args.revisions, args.repo), args.out)
    print(f"{len(pngs)} plots: {args.out / 'index.html'}")


if __name__ == "__main__":
    main()
