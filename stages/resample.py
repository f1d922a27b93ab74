"""DVC stage `resample`: every audio file under --src -> mono PCM16 wav at `resample.sample_rate` in --out.

Reads the `resample` section of params.yaml; mirrors --src (same relative paths, metadata copied), writes
--out/rejects.tsv (files that could not be decoded, with the reason), --out/metrics.json (counts) and
--out/timings.json (wall time, throughput: not a DVC metric, they change on every run). Finished
files are skipped on a rerun; the stage fails only when rejects exceed `max_reject_fraction`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from audiopipe.config import ResampleConfig, TrackingConfig, load_params
from audiopipe.data.prepare import resample_dataset
from audiopipe.stage_lock import hold_output_lock
from audiopipe.storage import write_json_atomic
from audiopipe.tracking import stage_run

log = logging.getLogger(__name__)
CONFIG = ResampleConfig  # the dataclass of this stage's params section (audiopipe.stage_registry)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="output of the download stage")
    parser.add_argument("--out", type=Path, required=True, help="output folder of this stage")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    hold_output_lock(args.out)  # one writer per output folder, even when an orphaned run is still alive
    cfg = load_params("resample", CONFIG, args.params)
    tracking = load_params("tracking", TrackingConfig, args.params)
    with stage_run("resample", params=cfg, enabled=tracking.enabled, experiment=tracking.experiment) as run:
        metrics = resample_dataset(
            args.src,
            args.out,
            sample_rate=cfg.sample_rate,
            workers=cfg.workers,
            max_reject_fraction=cfg.max_reject_fraction,
        )
        run.log_metrics(metrics, step=0)
    timings = {k: metrics.pop(k) for k in [k for k in metrics if k.endswith("wall_s")]}
    write_json_atomic(args.out / "metrics.json", metrics)
    write_json_atomic(args.out / "timings.json", timings)
    log.info("resample: %d files, %d rejects", metrics["resample/files"], metrics["resample/rejects"])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
