"""`audiopipe convert OFFICIAL OUT`: a published checkpoint as audiopipe's final-model checkpoint, written once.

Reads the layouts of `audiopipe.inference.checkpoints` (EfficientAT `mn*/dymn*_as*.pt`, EAT fairseq / Hugging
Face, ATST-SED stage-2 Lightning files), checks that the weights load strictly into our model, and writes
`{"builder", "builder_kwargs", "model", "class_names", "sample_rate", "config", "metrics"}` (+ `mean_teacher`
and `postprocessing` for SED; docs/architecture.md) with `torch.save`, atomically. `OUT` then works with
`tag` / `detect` / `features` / `export` like a checkpoint the pipeline trained. `OUT` is never the input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiopipe.inference.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("official", type=Path, metavar="OFFICIAL", help="published checkpoint file")
    parser.add_argument("out", type=Path, metavar="OUT", help="audiopipe checkpoint to write (e.g. mn10_as.pt)")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="EfficientAT architecture (e.g. mn10_as, dymn10_as) when the file name does not say")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and args.out.resolve() == args.official.resolve():
        raise UserError(f"OUT {args.out} is the input file; choose another name", exit_code=2)
    if args.out.exists() and not args.force:
        raise UserError(f"OUT {args.out} exists; pass --force to overwrite it or choose another name", exit_code=2)
    from audiopipe.inference.checkpoints import load_for_inference, to_payload
    from audiopipe.storage import save_checkpoint

    loaded = load_for_inference(args.official, model_name=args.model)
    save_checkpoint(args.out, to_payload(loaded))
    what = {"tagger": "tagger", "detector": "sound event detector", "encoder": "encoder"}.get(loaded.kind, "model")
    classes = f", {len(loaded.class_names)} classes" if loaded.class_names else ""
    print(f"{args.out}: {loaded.layout} {what} ({loaded.builder}{classes}, {loaded.sample_rate} Hz) "
          f"converted from {args.official}", file=sys.stdout)
    if loaded.note:
        print(f"note: {loaded.note}", file=sys.stderr)
    return 0
