"""`audiopipe claims [--seeds 0 1 2] [--claims eat_init kd sed]`: seeded comparisons of pipeline variants.

Trains every variant of each claim once per seed in this process (the DVC stages' task functions and inputs,
see `audiopipe.claims`), scores each checkpoint on the test split as `evaluate` does, and writes
<out>/<claim>/<variant>/seed-<s>/, <out>/claims.json and <out>/claims.md (printed at the end). Rerunning skips
finished runs. Reads the stage sections, `evaluate` and `tracking` from params.yaml, inputs from --data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CLAIM_NAMES = ("eat_init", "kd", "sed")  # = audiopipe.claims.CLAIMS (checked by the tests)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: %(default)s)")
    parser.add_argument("--claims", nargs="+", choices=CLAIM_NAMES, default=list(CLAIM_NAMES),
                        help="eat_init: pre-trained vs random EAT init; kd: KD vs no-KD student; "
                             "sed: ATST-SED stage 2 vs stage 1 (default: all)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("data/claims"), help="output folder (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="folder holding the DVC stage outputs (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from audiopipe.claims import MissingInputError, run_claims, sections
    from audiopipe.config import EvaluateConfig, TrackingConfig, load_params
    from audiopipe.sweep import load_targets

    targets = load_targets(args.params.resolve().parent)  # the stages' tasks and inputs, from dvc.yaml
    claims = list(dict.fromkeys(args.claims))
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f"audiopipe claims: --seeds must be distinct, got {args.seeds}")
    configs: dict[str, object] = {section: load_params(section, targets[section].resolve()[0], args.params)
               for section in sections(claims)}
    eval_cfg = load_params("evaluate", EvaluateConfig, args.params)
    tracking = load_params("tracking", TrackingConfig, args.params)
    try:
        run_claims(claims, args.seeds, configs=configs, eval_cfg=eval_cfg, data_dir=args.data, out_dir=args.out,
                   tracking_enabled=tracking.enabled, experiment=tracking.experiment)
    except MissingInputError as exc:
        raise SystemExit(f"audiopipe claims: {exc}") from None
    print()
    print((args.out / "claims.md").read_text(), end="")
    print(f"\ntable: {args.out / 'claims.md'}; per-seed numbers: {args.out / 'claims.json'}")
    return 0
