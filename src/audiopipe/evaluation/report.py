"""Self-contained HTML report of the `evaluate` stage (PNG plots beside it, no scripts, no CDN).

The report answers "did it work?": tagging and SED tables, plots, training curves and provenance.
A model whose stage did not run appears as *missing*, never as zeros. The tagging table ends with shaded
baseline rows (class prior, linear probe) that every model row is read against, and a model flagged as
collapsed carries a warning in its row.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiopipe.storage import atomic_write

TAGGING_COLUMNS = (("test/mAP", "mAP"), ("test/roc_auc", "ROC-AUC"), ("test/d_prime", "d′"),
                   ("test/score_spread", "score spread"), ("params_m", "params (M)"), ("gmacs_10s", "GMACs / 10 s"),
                   ("cpu_latency_ms_10s", "CPU ms / 10 s"))
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
    tagging_baselines: dict[str, dict[str, float] | None] = field(default_factory=dict)  # reference rows
    tagging_warnings: dict[str, str] = field(default_factory=dict)  # tagger -> warning shown in its row
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


def _row(name: str, metrics: Mapping[str, float] | None, columns: Sequence[tuple[str, str]], *,
         css: str = "", badge: str = "", absent: str = "missing") -> str:
    """One table row; `badge` is HTML appended to the name cell, `absent` fills cells of keys the row lacks."""
    if metrics is None:
        cells = f'<td class="missing" colspan="{len(columns)}">missing: stage not run or output absent</td>'
    else:
        cells = "".join(_cell(metrics[key]) if key in metrics else f'<td class="na">{absent}</td>'
                        for key, _ in columns)
    row_class = f' class="{css}"' if css else ""
    return f"<tr{row_class}><th>{html.escape(name)}{badge}</th>{cells}</tr>"


def _table(title: str, rows: Sequence[str], columns: Sequence[tuple[str, str]], row_header: str,
           caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    note = f"<p class='caption'>{caption}</p>" if caption else ""
    return (f"<h2>{html.escape(title)}</h2><table><thead><tr><th>{html.escape(row_header)}</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{note}")


BASELINE_CAPTION = (
    "Shaded rows marked <b>baseline</b> are references, not models: the class prior scores every clip with the "
    "training label frequencies, the linear probe is a logistic regression on mean/std/max log-mel statistics. "
    "A model row should beat both. <b>Score spread</b>: mean over classes of the std of the test probabilities "
    "over clips; a model whose outputs barely depend on the input is marked <b>collapsed</b>."
)


def _model_row(name: str, metrics: Mapping[str, float] | None, warning: str | None) -> str:
    if warning is None:
        return _row(name, metrics, TAGGING_COLUMNS)
    badge = f' <span class="warn" title="{html.escape(warning)}">&#9888; collapsed</span>'
    return _row(name, metrics, TAGGING_COLUMNS, css="collapsed", badge=badge)


def _tagging_table(data: ReportData) -> str:
    """Model rows (with collapse warnings), then the shaded baseline rows, then the caption."""
    models = [_model_row(name, metrics, data.tagging_warnings.get(name)) for name, metrics in data.tagging.items()]
    baselines = [_row(name, metrics, TAGGING_COLUMNS, css="baseline", badge=' <span class="tag">baseline</span>',
                      absent="&ndash;") for name, metrics in data.tagging_baselines.items()]
    warnings = "".join(f"<p class='warn'>&#9888; {html.escape(text)}</p>" for text in data.tagging_warnings.values())
    caption = BASELINE_CAPTION if data.tagging_baselines else ""
    return _table("Audio tagging (test split)", models + baselines, TAGGING_COLUMNS, "model", caption) + warnings


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
td.na{color:#888;text-align:center}
tr.baseline{background:#eef3f8;font-style:italic}tr.collapsed{background:#fdecea}
.tag{font-size:80%;font-style:normal;background:#c9d8e8;border-radius:3px;padding:0 4px}
.warn{color:#a00;font-weight:bold}p.caption{font-size:90%;color:#555;max-width:900px}
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
        _tagging_table(data),
        _table("Sound event detection (test split)",
               [_row(name, metrics, SED_COLUMNS) for name, metrics in data.sed.items()], SED_COLUMNS, "model"),
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
    with atomic_write(path) as tmp:
        tmp.write_text(render_html(data), encoding="utf-8")
    return path
