"""Loading `params.yaml`: `load_params(section, cls)` reads one section into its frozen dataclass.

The file is parsed with a `yaml.SafeLoader` that refuses duplicate keys and alias bombs; `from_dict` then checks
every key against the dataclass (unknown, missing, ill-typed, not one of its `Literal` choices, out of its range
in `RANGES`) and raises a `ConfigError` that names `file:section.key`. The dataclasses themselves live in
`config/sections.py`.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


MAX_MESSAGE_CHARS = 600  # a ConfigError never grows past this (values from the file are shortened first)


class ConfigError(ValueError):
    """A params section does not match its dataclass (names the file, section and key)."""

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 20] + " ... (message cut)"
        super().__init__(message)


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxlevel = 60, 60, 4, 4, 4, 2


def _short(value: Any) -> str:
    """A repr of a value read from the file, bounded in length and in time (no full walk of nested lists)."""
    return _REPR.repr(value)


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Allowed interval of a numeric field (each item of a list field); `None` values are not checked."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


AT_LEAST_1, POSITIVE, NON_NEGATIVE = Bounds(1), Bounds(0, low_open=True), Bounds(0)
UNIT, UNIT_HALF_OPEN = Bounds(0, 1), Bounds(0, 1, high_open=True)

# The one table of value ranges, checked by `from_dict` for a field of this name in any section (a name means
# the same thing everywhere: STYLE.md "units in names"). Every float must also be finite.
RANGES: dict[str, Bounds] = {
    **dict.fromkeys(["batch_size", "eval_batch_size", "batch_sizes", "epochs", "epoch_len", "hop_length", "n_mels",
                     "sample_rate", "target_frames", "clones", "median_window", "median_windows", "val_every",
                     "max_polyphony", "mp3_bitrate_kbps", "nproc_per_node", "nnodes"], AT_LEAST_1),
    **dict.fromkeys(["clip_duration_s", "duration_s", "clip_seconds", "lr", "lr_cnn", "lr_rnn", "temperature",
                     "width_mult", "max_grad_norm", "sampling_offset"], POSITIVE),
    **dict.fromkeys(["n_train", "n_valid", "n_test", "n_weak", "n_unlabelled", "max_events", "workers", "num_workers",
                     "weight_decay", "lr_encoder", "encoder_lr_scale", "ema_anneal_steps", "checkpoint_every_steps",
                     "mixup_alpha", "gain_db", "warmup_epochs", "roll_samples", "fmin_aug_range", "fmax_aug_range",
                     "freqm", "timem", "bn_recalib_batches", "const_max", "weak_loss_weight", "frame_shift_max_frames",
                     "mask_time_frames", "mask_freq_bins", "timeline_clips", "n_startup_trials", "n_warmup_steps"],
                    NON_NEGATIVE),
    **dict.fromkeys(["max_reject_fraction", "warmup_fraction", "min_lr_ratio", "ema_decay", "ema_decay_start",
                     "ema_decay_end", "mixup_prob", "freq_warp_prob", "kd_lambda", "threshold"], UNIT),
    **dict.fromkeys(["mask_ratio", "betas", "dropout", "drop_path"], UNIT_HALF_OPEN),
    "layer_decay": Bounds(0, 1, low_open=True),
}


def _check_range(name: str, value: Any, where: str) -> None:
    bounds = RANGES.get(name)
    if bounds is None or value is None:
        return
    for i, x in enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]:
        if x not in bounds:
            at = "" if i is None else f"[{i}]"
            raise ConfigError(f"{where}{at}: {_short(x)} is out of range; allowed: {bounds}")


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {_short(value)} is not allowed; choose one of {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {_short(value)} is not of type {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {_short(value)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_short(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_type = args[0] if args else Any
        items = [_check_type(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_short(value)}")
        return dict(value)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_short(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value} is not allowed; write a finite number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_short(value)}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {_short(value)}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_short(value)}")
        return value
    return value


def from_dict(cls: type[T], raw: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown, missing and ill-typed keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {_short(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields), key=str)
    missing = sorted(set(fields) - set(raw))
    if unknown:
        named = _short(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ConfigError(f"{where}: unknown key(s) {named}; allowed keys are {sorted(fields)}")
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}; add them to params.yaml")
    values = {name: _check_type(raw[name], hints[name], f"{where}.{name}") for name in fields}
    for name, value in values.items():
        _check_range(name, value, f"{where}.{name}")
    return cls(**values)


class _Refused(Exception):
    """Valid YAML that params.yaml must not use (the message names the line)."""


MAX_YAML_NODES = 100_000  # params.yaml holds ~500 values; aliases may not expand it past this


class _ParamsLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses duplicate keys (DVC refuses them too) and aliases (`*name`) that expand the
    document past `MAX_YAML_NODES` values ("billion laughs"); plain aliases, as `yaml.safe_dump` writes for
    shared values, and merge keys (`<<: *section`, then the keys that differ: the no-KD baseline) still load."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *name`: the merged keys are defaults that this mapping's own keys override
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys: SafeLoader's own error names them
            if key in seen:
                raise _Refused(
                    f"line {key_node.start_mark.line + 1}: duplicate key {_short(key)}; DVC refuses the file too, "
                    "delete one of the two"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Number of values `node` stands for once every alias is expanded (memoised: linear in the file's size)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise _Refused(f"line {node.start_mark.line + 1}: a YAML alias refers to its own value; write it out")
    open_nodes.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, open_nodes)
        if size > MAX_YAML_NODES:
            raise _Refused(
                f"line {node.start_mark.line + 1}: YAML aliases expand this value to more than {MAX_YAML_NODES} "
                "items (\"billion laughs\"); write the values out instead of aliasing them"
            )
    open_nodes.discard(key)
    sizes[key] = size
    return size


def load_params(section: str, cls: type[T], path: str | Path = "params.yaml") -> T:
    """Load one section of `params.yaml` into its frozen dataclass.

    Raises:
        ConfigError: the file is missing or not valid YAML (names the line), holds a duplicate key or YAML
            aliases that expand past `MAX_YAML_NODES` values (names the line), the section is missing, or a key is
            unknown, missing, of the wrong type, not one of its choices (`Literal` fields: device, amp,
            consistency ...) or out of its range in `RANGES` (names `section.key` and what is allowed); messages
            are at most `MAX_MESSAGE_CHARS` long.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the repository root")
    try:
        data = yaml.load(path.read_text(), Loader=_ParamsLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except _Refused as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}; fix the syntax there (indent with spaces)") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}; fix the file"
        )
    if section not in data:
        raise ConfigError(f"{path}: no section '{section}'; sections present: {sorted(data)}")
    return from_dict(cls, data[section], f"{path}:{section}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (for checkpoints and tracking)."""
    return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
