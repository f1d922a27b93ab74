"""`audiopipe` command line: one sub-command per module in `audiopipe/commands/`.

Each command module defines `add_arguments(parser)` and `run(args) -> int`; it is imported only when
its command is used, so `audiopipe --help` stays fast and one broken optional dependency cannot take
the others down.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS: dict[str, str] = {
    "complexity": "Parameters, MACs for a 10-s clip and peak activation memory of a model",
    "tag": "Top-k audio tags for audio files (MobileNet student or EAT teacher checkpoints, ensembles)",
    "detect": "Sound events (onset, offset, label, score) for audio files with an ATST-SED checkpoint",
    "features": "Frame- and utterance-level EAT features of audio files, written as .npy",
    "export": "Export a trained student to ONNX",
    "sweep": "Optuna hyper-parameter sweep of a training stage (resumable, prunes bad trials)",
    "claims": "Seeded comparisons (EAT init, KD, ATST-SED stage 2): mean ± std of test metrics over seeds",
    "report": "Rebuild the evaluation HTML report from data/evaluate",
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {help_}" for name, help_ in COMMANDS.items()]
    return "usage: audiopipe COMMAND [options]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\nRun `audiopipe COMMAND --help` for the options of one command."
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"audiopipe: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"audiopipe.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"audiopipe {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
