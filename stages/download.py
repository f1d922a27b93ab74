"""DVC stage `download`: fetch or build the corpus named by `download.source` into --out/<source>/.

Reads the `download` section of params.yaml (sizes of the demo sets, seed, corpus URL overrides); writes a
data folder (audio + classes.txt, manifest.jsonl, weak.tsv, strong.tsv, tags.csv, .completed) under
--out/<source>/ and --out/metrics.json. realmix keeps its Debian packages in --cache (outside DVC outs).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from audiopipe.config import DownloadConfig, TrackingConfig, load_params
from audiopipe.data.download import download
from audiopipe.stage_lock import hold_output_lock
from audiopipe.storage import write_json_atomic
from audiopipe.tracking import stage_run

log = logging.getLogger(__name__)
CONFIG = DownloadConfig  # the dataclass of this stage's params section (audiopipe.stage_registry)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder of this stage")
    parser.add_argument(
        "--cache", type=Path, required=True, help="package/download cache (kept across runs)"
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    hold_output_lock(args.out)  # one writer per output folder, even when an orphaned run is still alive
    cfg = load_params("download", CONFIG, args.params)
    tracking = load_params("tracking", TrackingConfig, args.params)
    counts = {
        "train": cfg.n_train,
        "valid": cfg.n_valid,
        "test": cfg.n_test,
        "weak": cfg.n_weak,
        "unlabelled": cfg.n_unlabelled,
    }
    opts = {
        "counts": counts, "duration_s": cfg.clip_duration_s, "sample_rate": cfg.sample_rate, "seed": cfg.seed,
        "max_events": cfg.max_events, "max_polyphony": cfg.max_polyphony, "snr_db": (cfg.snr_min_db, cfg.snr_max_db),
    }  # fmt: skip
    if cfg.source not in ("realmix", "synthetic"):
        opts = {"url": cfg.url, "sha256": cfg.sha256}
    with stage_run("download", params=cfg, enabled=tracking.enabled, experiment=tracking.experiment) as run:
        metrics = download(cfg.source, args.out, cache_dir=args.cache, **opts)
        run.log_metrics(metrics, step=0)
    write_json_atomic(args.out / "metrics.json", metrics)
    log.info("download: %d clips in %s", metrics["download/clips"], args.out / cfg.source)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
