"""`audiopipe` command line: one sub-command per module in `audiopipe/commands/`.

Each command module defines `add_arguments(parser)` and `run(args) -> int`; it is imported only when
its command is used, and command modules import torch only inside `run`, so `audiopipe --help` and
`audiopipe COMMAND --help` stay fast and one broken optional dependency cannot take the others down.
Every failure ends as one line `audiopipe COMMAND: <what> ; <what to do>` on stderr (exit 2 for bad
arguments, 1 otherwise); set AUDIOPIPE_DEBUG=1 to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import logging
import os
import sys
from typing import NoReturn

COMMANDS: dict[str, str] = {
    "complexity": "Parameters, MACs for a 10-s clip and peak activation memory of a model",
    "tag": "Top-k audio tags of audio files (our taggers, EfficientAT mn*/dymn*_as.pt, fine-tuned EAT, ensembles)",
    "detect": "Sound events (onset, offset, label, score) of audio files (our SED models, ATST-SED stage-2 files)",
    "features": "Frame- and utterance-level EAT features of audio files, written as .npy",
    "convert": "Convert a published checkpoint (EfficientAT, EAT, ATST-SED) to audiopipe's checkpoint format",
    "export": "Export a trained student to ONNX",
    "sweep": "Optuna hyper-parameter sweep of a training stage (resumable, prunes bad trials)",
    "claims": "Seeded comparisons (EAT init, KD, ATST-SED stage 2): mean ± std of test metrics over seeds",
    "report": "Rebuild the evaluation HTML report from data/evaluate",
}
# errors whose message is already a complete sentence for the user (matched by name: no torch import here)
_USER_ERRORS = {"UserError", "CheckpointError", "AudioDecodeError", "FileNotFoundError", "PermissionError",
                "IsADirectoryError"}


def available() -> dict[str, str]:
    """The commands whose module exists in this installation (so `--help` lists only what works)."""
    return {name: help_ for name, help_ in COMMANDS.items()
            if importlib.util.find_spec(f"audiopipe.commands.{name}") is not None}


def _usage() -> str:
    commands = available()
    width = max(len(name) for name in commands)
    lines = [f"  {name:<{width}}  {help_}" for name, help_ in commands.items()]
    return "usage: audiopipe COMMAND [options]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\nRun `audiopipe COMMAND --help` for the options of one command (defaults are shown there)."
    )


class Parser(argparse.ArgumentParser):
    """argparse with defaults in `--help` and one-line errors that name the flag."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}{self._suggestion(message)} (see `{self.prog} --help`)\n")

    def _suggestion(self, message: str) -> str:
        """"; did you mean --checkpoint?" for a mistyped flag of an "unrecognized arguments" error."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        flags = [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]
        close = [match for word in message.split(":", 1)[1].split() if word.startswith("--")
                 for match in difflib.get_close_matches(word.split("=", 1)[0], flags, n=1, cutoff=0.75)]
        return f"; did you mean {' / '.join(dict.fromkeys(close))}?" if close else ""


def _message(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if type(err).__name__ in _USER_ERRORS:
        return text
    return f"unexpected {type(err).__name__}: {text[:300]} (set AUDIOPIPE_DEBUG=1 to see the traceback)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in available():
        close = difflib.get_close_matches(name, list(available()), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"audiopipe: unknown command '{name}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"audiopipe.commands.{name}")
    parser = Parser(prog=f"audiopipe {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    args = parser.parse_intermixed_args(rest) if getattr(module, "INTERMIXED", False) else parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"audiopipe {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if os.environ.get("AUDIOPIPE_DEBUG"):
            raise
        print(f"audiopipe {name}: {_message(err)}", file=sys.stderr)
        return int(getattr(err, "exit_code", 1))


if __name__ == "__main__":
    sys.exit(main())
