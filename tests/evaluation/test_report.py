"""The evaluation report: tables, missing inputs, plots, and rendering in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from audiopipe.evaluation import plots
from audiopipe.evaluation.report import ReportData, render_html, write_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _report(tmp_path: Path) -> Path:
    plots.per_class_ap_bars(tmp_path / "ap.png", {"KD student": {"Dog": 0.8, "Speech": 0.6},
                                                  "no-KD student": {"Dog": 0.5, "Speech": 0.7}})
    plots.training_curves(tmp_path / "curve.png", "distill", {"step": [1, 2, 3], "train/loss": [1.0, 0.8, 0.7]},
                          {"epoch": [0, 1], "valid/mAP": [0.3, 0.5]})
    plots.event_timeline(tmp_path / "timeline.png", "clip_0", 10.0, [(1.0, 2.0, "Dog")], [(1.1, 2.2, "Dog")],
                         scores={"Dog": [0.1] * 10 + [0.7] * 10 + [0.1] * 136, "Cat": [0.0] * 156},
                         frame_rate_hz=15.625, threshold=0.5)
    data = ReportData(
        tagging={"KD student": {"test/mAP": 0.61, "params_m": 0.2}, "EAT teacher": None},
        sed={"ATST-SED stage 2 student": {"psds1": 0.31, "psds2": 0.52}},
        figures=[("AP per class", "ap.png"), ("timeline", "timeline.png")],
        curves=[("distill", "curve.png")],
        missing={"EAT teacher": "data/finetune_eat/eat_tagger.pt not found"},
        provenance={"git commit": "abc123"},
        params_yaml="evaluate:\n  split: test\n",
    )
    return write_report(tmp_path / "report.html", data)


def test_missing_models_are_reported_as_missing_not_zero(tmp_path: Path) -> None:
    text = _report(tmp_path).read_text()
    row = text[text.index("<th>EAT teacher</th>"):].split("</tr>")[0]
    assert "missing" in row and "0.0000" not in row
    assert "0.6100" in text and "abc123" in text and "split: test" in text


def test_report_escapes_html_in_names() -> None:
    page = render_html(ReportData(tagging={"<script>": {"test/mAP": 0.5}}))
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_every_referenced_image_exists(tmp_path: Path) -> None:
    report = _report(tmp_path)
    text = report.read_text()
    for name in ("ap.png", "curve.png", "timeline.png"):
        assert f'src="{name}"' in text and (tmp_path / name).stat().st_size > 1000


def test_report_renders_in_headless_chromium_with_images_and_tables(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium (make browser)")
    report = _report(tmp_path)
    probe = tmp_path / "probe.html"  # the report plus a load-time probe; the report itself has no scripts
    probe.write_text(report.read_text().replace("</body>", (
        "<script>window.addEventListener('load',()=>{const ok=[...document.images].filter("
        "i=>i.complete&&i.naturalWidth>0).length;document.body.insertAdjacentHTML('beforeend',"
        "`<p id=probe>images:${ok}/${document.images.length} tables:${document.tables?.length ?? "
        "document.querySelectorAll('table').length}</p>`)});</script></body>")))
    user_dir = tmp_path / "profile"
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={user_dir}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert "images:3/3" in dom.stdout, dom.stdout[-500:] + dom.stderr[-500:]
    assert "tables:3" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] == 1600 and np.std(pixels) > 0.05  # not a blank page


def test_timeline_draws_the_frame_probabilities_when_given(tmp_path: Path) -> None:
    events = ([(1.0, 2.0, "Dog")], [])
    plain = plots.event_timeline(tmp_path / "plain.png", "c", 10.0, *events)
    curve = plots.event_timeline(tmp_path / "curve.png", "c", 10.0, *events, scores={"Dog": [0.0] * 50 + [0.4] * 106},
                                 frame_rate_hz=15.625, threshold=0.5)
    assert plain.read_bytes() != curve.read_bytes()


def test_baseline_rows_are_marked_and_a_collapsed_model_carries_a_warning() -> None:
    page = render_html(ReportData(
        tagging={"KD student": {"test/mAP": 0.2, "test/score_spread": 0.0}, "EAT teacher": {"test/mAP": 0.6}},
        tagging_baselines={"baseline: class prior": {"test/mAP": 0.25}},
        tagging_warnings={"KD student": "KD student looks collapsed"},
    ))
    rows = {name: page[page.index(f"<th>{name}"):].split("</tr>")[0]
            for name in ("KD student", "EAT teacher", "baseline: class prior")}
    assert "&#9888; collapsed" in rows["KD student"] and "collapsed" not in rows["EAT teacher"]
    assert '<tr class="baseline"><th>baseline: class prior' in page and ">baseline</span>" in rows[
        "baseline: class prior"]
    assert "missing" not in rows["baseline: class prior"]  # no params/latency for a baseline: a dash, not "missing"
    assert "A model row should beat both" in page and "KD student looks collapsed" in page
