"""Self-contained HTML report of the `evaluate` stage (PNG plots beside it, no scripts, no CDN).

The report answers "did it work?": tagging and SED tables, plots, training curves and provenance.
A model whose stage did not run appears as *missing*, never as zeros.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TAGGING_COLUMNS = (("test/mAP", "mAP"), ("test/roc_auc", "ROC-AUC"), ("test/d_prime", "d′"),
                   ("params_m", "params (M)"), ("gmacs_10s", "GMACs / 10 s"), ("cpu_latency_ms_10s", "CPU ms / 10 s"))
SED_COLUMNS = (
    ("psds1", "PSDS1"),
    ("psds2", "PSDS2"),
    ("event_f1", "event F1"),
    ("intersection_f1", "intersection F1"),
    ("psds2_mean_tpr", "PSDS2 without spread penalty"),  # diagnostic: learning visible while PSDS is still 0
    ("frame_auc", "frame ROC-AUC"),
)


@dataclass
class ReportData:
    """Everything the report shows; `None` in a metrics slot means the input was missing."""

    tagging: dict[str, dict[str, float] | None] = field(default_factory=dict)
    sed: dict[str, dict[str, float] | None] = field(default_factory=dict)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, png file name beside the report)
    curves: list[tuple[str, str]] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # model or input -> why it is missing
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)
    params_yaml: str = ""


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="missing">missing</td>'
    if isinstance(value, float):
        if math.isnan(value):
            return '<td class="missing">n/a</td>'
        return f"<td>{value:.4f}</td>" if abs(value) < 100 else f"<td>{value:.1f}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def _table(title: str, rows: Mapping[str, Mapping[str, float] | None], columns: Sequence[tuple[str, str]],
           row_header: str) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = []
    for name, metrics in rows.items():
        if metrics is None:
            cells = f'<td class="missing" colspan="{len(columns)}">missing: stage not run or output absent</td>'
        else:
            cells = "".join(_cell(metrics.get(key)) for key, _ in columns)
        body.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return (f"<h2>{html.escape(title)}</h2><table><thead><tr><th>{html.escape(row_header)}</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _figures(title: str, figures: Sequence[tuple[str, str]]) -> str:
    if not figures:
        return ""
    items = "".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
        "</figcaption></figure>"
        for caption, name in figures
    )
    return f"<h2>{html.escape(title)}</h2><div class='figures'>{items}</div>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
thead th{background:#f0f0f0}tbody th{text-align:left}
td.missing{color:#a00;font-style:italic;text-align:center}
.figures{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}img{max-width:560px;border:1px solid #ddd}
pre{background:#f7f7f7;padding:1em;overflow:auto;max-height:420px}
"""


def render_html(data: ReportData) -> str:
    """The report page as a string."""
    missing = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in data.missing.items())
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in data.notes)
    provenance = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                         for k, v in data.provenance.items())
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>audiopipe evaluation report</title>",
        f"<style>{STYLE}</style></head><body><h1>audiopipe evaluation report</h1>",
        _table("Audio tagging (test split)", data.tagging, TAGGING_COLUMNS, "model"),
        _table("Sound event detection (test split)", data.sed, SED_COLUMNS, "model"),
        f"<h2>Missing inputs</h2><ul>{missing}</ul>" if missing else "",
        f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "",
        _figures("Plots", data.figures),
        _figures("Training curves", data.curves),
        f"<h2>Provenance</h2><table><tbody>{provenance}</tbody></table>",
        f"<h3>params.yaml</h3><pre>{html.escape(data.params_yaml)}</pre>",
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part)


def write_report(path: Path, data: ReportData) -> Path:
    """Write the HTML atomically; the PNG files named in `data` must already sit beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_html(data))
    os.replace(tmp, path)
    return path
