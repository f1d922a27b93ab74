"""DVC stage `pack_hdf5`: pack the resampled data folder into one HDF5 file per split (--out/<split>.h5).

Reads the `pack_hdf5` section of params.yaml (codec pcm16|mp3) and the data folder under --src; writes
--out/{train,valid,test,weak,unlabelled}.h5 (those present), --out/metrics.json (clip counts) and
--out/timings.json (wall time: not a DVC metric). Training stages depend on the .h5 files, not on --out,
so a rerun that writes identical packs leaves them up to date.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from audiopipe.config import PackHdf5Config, TrackingConfig, load_params
from audiopipe.data.prepare import pack_dataset
from audiopipe.stage_lock import hold_output_lock
from audiopipe.storage import write_json_atomic
from audiopipe.tracking import stage_run

log = logging.getLogger(__name__)
CONFIG = PackHdf5Config  # the dataclass of this stage's params section (audiopipe.stage_registry)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="output of the resample stage")
    parser.add_argument("--out", type=Path, required=True, help="output folder of this stage")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    hold_output_lock(args.out)  # one writer per output folder, even when an orphaned run is still alive
    cfg = load_params("pack_hdf5", CONFIG, args.params)
    tracking = load_params("tracking", TrackingConfig, args.params)
    with stage_run("pack_hdf5", params=cfg, enabled=tracking.enabled, experiment=tracking.experiment) as run:
        metrics = pack_dataset(args.src, args.out, codec=cfg.codec, mp3_bitrate_kbps=cfg.mp3_bitrate_kbps)
        run.log_metrics(metrics, step=0)
    timings = {k: metrics.pop(k) for k in [k for k in metrics if k.endswith("wall_s")]}
    write_json_atomic(args.out / "metrics.json", metrics)
    write_json_atomic(args.out / "timings.json", timings)
    log.info("pack_hdf5: %s", metrics)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
