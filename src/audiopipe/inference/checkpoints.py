"""Load any checkpoint the inference commands accept, and convert published ones to our format.

Layouts recognised by `read_layout` (file read with `torch.load(weights_only=True)`; pickled config objects of
fairseq / Lightning files become inert placeholders, so no pickled code runs):

    audiopipe     our final-model payload {"builder", "builder_kwargs", "model", "class_names", "sample_rate", ...}
    efficientat   EfficientAT `mn*_as*.pt` / `dymn*_as*.pt`: a bare MobileNetV3 / DyMN state dict
                  (`features.*`/`classifier.*`, or `layers.*`/`in_c.*`/`out_c.*`); the architecture comes from the
                  file name (`mn10_as_mAP_471.pt` -> mn10_as) or `model_name`
    eat           EAT fairseq (`{"model": {...}}`, pre-trained `modality_encoders.IMAGE.*` or fine-tuned `model.*`)
                  or Hugging Face (`model.local_encoder.*`, `.bin` or `.safetensors`) weights (spec eat.md §2.6)
    atst-sed      ATST-SED Lightning checkpoint: `state_dict` with `sed_student.*` / `sed_teacher.*`
                  (spec atst_sed.md §3.4); DESED's 10 classes and the stage-2 median filters

`load_for_inference(path)` returns an `InferenceModel` (model in eval mode, kind "tagger" | "detector" |
"encoder", class names, sample rate, post-processing). `to_payload(loaded)` is our documented final-model
payload (docs/architecture.md), which `audiopipe convert` writes once so later runs skip the conversion.
Every problem raises `UserError` naming the file and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audiopipe.inference.classes import DESED_CLASSES, audioset_classes
from audiopipe.inference.errors import UserError
from audiopipe.models.protocols import SoundEventDetector

KINDS = ("tagger", "detector", "encoder")
SED_BUILDERS = ("sed_atst", "sed_eat", "sed_crnn")
TAGGER_BUILDERS = ("mn_tagger", "dymn_tagger", "eat_tagger")
ATST_SED_MEDIAN_WINDOWS = [6, 20, 7, 4, 7, 6, 6, 6, 6, 6]  # stage 2, frames of 64 ms (spec atst_sed.md §7)
_THOP = ("total_ops", "total_params")


@dataclass
class InferenceModel:
    """A loaded checkpoint ready for inference."""

    model: nn.Module
    kind: str
    class_names: list[str]
    sample_rate: int
    source: str
    layout: str
    builder: str
    builder_kwargs: dict[str, Any]
    postprocessing: dict[str, Any] = field(default_factory=dict)
    mean_teacher: dict[str, torch.Tensor] | None = None  # SED: the other weight set, kept for `convert`
    student: dict[str, torch.Tensor] | None = None
    note: str = ""

    def detector(self) -> SoundEventDetector:
        """`model` typed as a sound event detector; a UserError when it is not one (check `kind` first)."""
        if not isinstance(self.model, SoundEventDetector):
            raise UserError(f"{self.source}: a {type(self.model).__name__} ({self.builder}) is not a sound event "
                            "detector (no sample_rate / frame_rate_hz)", exit_code=2)
        return self.model


def read_raw(path: str | Path) -> dict[str, Any]:
    """The file's top-level mapping, loaded without running pickled code."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found; check the path (or train it: `dvc repro`)")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; pass the checkpoint file inside it")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as err:  # noqa: BLE001 - safetensors raises several types
            raise UserError(f"{path}: cannot read safetensors file ({str(err)[:120]})") from err
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types depending on the damage
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - not a zip checkpoint at all
            unsafe = []
        if not unsafe:
            raise UserError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {str(err)[:120]}); "
                            "check that the download or copy is complete") from err
        from audiopipe.models.eat.checkpoint import _placeholder  # inert stand-ins for pickled config classes

        with torch.serialization.safe_globals([(_placeholder(name), name) for name in unsafe]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, Mapping):
        raise UserError(f"{path}: holds a {type(payload).__name__}, not a checkpoint mapping")
    return _verified(dict(payload), path)


def _verified(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """Our checkpoints carry a checksum of their content (audiopipe.storage); check it and drop it."""
    from audiopipe.storage import CHECKSUM_KEY, payload_digest

    stored = payload.pop(CHECKSUM_KEY, None)
    if stored is not None and stored != payload_digest(payload):
        raise UserError(f"{path}: checkpoint is corrupted (its weights do not match the checksum written with them); "
                        "restore it from a backup or `dvc pull`, or rerun the stage that wrote it")
    return payload


def _tensors(mapping: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in mapping.items() if isinstance(v, torch.Tensor)}


def read_layout(raw: Mapping[str, Any]) -> str:
    """Which published layout a raw mapping has (see the module docstring), or "unknown"."""
    if "builder" in raw and isinstance(raw.get("model"), Mapping):
        return "audiopipe"
    state = raw.get("state_dict")
    if isinstance(state, Mapping):
        if any(str(k).startswith(("sed_student.", "sed_teacher.")) for k in state):
            return "atst-sed"
        return "lightning"
    inner = raw["model"] if isinstance(raw.get("model"), Mapping) else raw
    keys = set(_tensors(inner))
    if any(re.match(r"^(?:model\.)?(?:modality_encoders\.IMAGE\.)?local_encoder\.proj\.weight$", k) for k in keys):
        return "eat"
    if "features.0.0.weight" in keys and any(k.startswith("classifier.") for k in keys):
        return "efficientat"
    if "in_c.0.weight" in keys and any(k.startswith("layers.") for k in keys):
        return "efficientat"
    return "unknown"


def efficientat_name(path: Path, model_name: str | None) -> str:
    """Published EfficientAT name from `--model` or the file name (`dymn20_as_mAP_493.pt` -> dymn20_as)."""
    from audiopipe.models import dymn, mobilenet

    known = [n for n in (*mobilenet.NAMES, *dymn.NAMES) if not n.endswith("_tagger")]
    if model_name:
        if model_name not in known:
            raise UserError(f"--model {model_name}: not an EfficientAT AudioSet model; choose one of "
                            f"{', '.join(known)}", exit_code=2)
        return model_name
    stem = path.name.split(".")[0]
    matches = [n for n in known if stem == n or stem.startswith(n + "_")]
    if not matches:
        raise UserError(f"{path}: an EfficientAT state dict, but the file name does not say which model; "
                        "pass --model NAME (e.g. --model mn10_as or --model dymn10_as)", exit_code=2)
    return max(matches, key=len)


def _generic_names(n: int, path: Path) -> tuple[list[str], str]:
    if n == 527:
        return list(audioset_classes()), ""
    return [f"class_{i}" for i in range(n)], f"{path}: {n} outputs (not AudioSet's 527): classes shown as class_<i>"


def _strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, hint: str,
            check_only: bool = False) -> None:
    """Load `state` strictly (or only compare keys and shapes, e.g. on a meta model); UserError on a mismatch."""
    from audiopipe.storage import CheckpointError, check_state_dict, load_state_dict_strict

    try:
        (check_state_dict if check_only else load_state_dict_strict)(model, dict(state), source=str(path))
    except CheckpointError as err:
        first = str(err).split("; check that")[0]
        raise UserError(f"{first}; {hint}") from err


def _load_efficientat(raw: Mapping[str, Any], path: Path, model_name: str | None) -> InferenceModel:
    from audiopipe.models import build_model, dymn, mobilenet
    from audiopipe.models.mobilenet.tagger import MelTagger

    state = _tensors(raw)
    name = efficientat_name(path, model_name)
    family = dymn if name.startswith("dymn") else mobilenet
    kwargs = dict(family.tagger_kwargs(name))
    if "classifier.5.weight" in state:
        kwargs["n_classes"] = int(state["classifier.5.weight"].shape[0])
    builder = "dymn_tagger" if family is dymn else "mn_tagger"
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    model = build_model(builder, **kwargs)
    if not isinstance(model, MelTagger):  # mn_tagger / dymn_tagger: a mel front end + `net`
        raise TypeError(f"{builder} built a {type(model).__name__}, not a MelTagger")
    _strict(model.net, state, path, f"the weights are not {name}: pass the right --model (e.g. mn10_as, dymn10_as)")
    names, note = _generic_names(int(kwargs["n_classes"]), path)
    return InferenceModel(model.eval(), "tagger", names, int(model.sample_rate), str(path), "efficientat",
                          builder, kwargs, note=note)


def _load_eat(raw: Mapping[str, Any], path: Path) -> InferenceModel:
    from audiopipe.models.eat.checkpoint import convert_state_dict, load_official
    from audiopipe.models.eat.encoder import EATEncoder
    from audiopipe.models.eat.tagger import EATTagger
    from audiopipe.storage import CheckpointError

    inner = raw["model"] if isinstance(raw.get("model"), Mapping) else raw
    try:
        state = convert_state_dict(inner, str(path))
    except CheckpointError as err:
        raise UserError(str(err)) from err
    dim = int(state["encoder.patch_embed.proj.weight"].shape[0])
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"encoder\.blocks\.(\d+)\.", k))), default=-1)
    shape = {"embed_dim": dim, "depth": depth, "num_heads": max(1, dim // 64)}  # EAT uses 64-wide heads
    try:
        if "head.weight" in state:
            n_classes = int(state["head.weight"].shape[0])
            kwargs = {"size": "eat_base", **shape, "n_classes": n_classes, "sample_rate": 16000,
                      "target_frames": 1024, "drop_path_rate": 0.0}
            tagger = EATTagger(n_classes, 16000, dim, depth, shape["num_heads"], target_frames=1024,
                               drop_path_rate=0.0)
            load_official(tagger, inner)
            names, note = _generic_names(n_classes, path)
            return InferenceModel(tagger.eval(), "tagger", names, 16000, str(path), "eat", "eat_tagger", kwargs,
                                  note=note)
        encoder = EATEncoder(dim, depth, shape["num_heads"])
        load_official(encoder, inner)
    except CheckpointError as err:
        raise UserError(str(err)) from err
    return InferenceModel(encoder.eval(), "encoder", [], 16000, str(path), "eat", "eat_base", shape,
                          note=f"{path}: pre-trained EAT (no classifier head)")


def _atst_sed_weights(state: Mapping[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in _tensors(state).items() if k.startswith(prefix) and not k.endswith(_THOP)}


def _median_windows(raw: Mapping[str, Any], n_classes: int) -> list[int]:
    hyper = raw.get("hyper_parameters")
    training = hyper.get("training") if isinstance(hyper, Mapping) else None
    windows = training.get("median_window") if isinstance(training, Mapping) else None
    if isinstance(windows, (list, tuple)) and len(windows) == n_classes:
        return [int(w) for w in windows]
    if isinstance(windows, int):
        return [windows] * n_classes
    return list(ATST_SED_MEDIAN_WINDOWS) if n_classes == 10 else [7] * n_classes


def _load_atst_sed(raw: Mapping[str, Any], path: Path, weights: str) -> InferenceModel:
    from audiopipe.models import atst, sed

    state = raw["state_dict"]
    student = _atst_sed_weights(state, "sed_student.")
    teacher = _atst_sed_weights(state, "sed_teacher.")
    chosen = teacher if (weights == "teacher" and teacher) or not student else student
    if "dense.weight" not in chosen or "atst_frame.atst.pos_embed" not in chosen:
        raise UserError(f"{path}: ATST-SED checkpoint without the CRNN head or the ATST encoder "
                        "(expected sed_teacher.dense.weight and sed_teacher.atst_frame.atst.pos_embed)")
    n_classes, rnn_hidden = (int(s) for s in chosen["dense.weight"].shape)
    dim = int(chosen["atst_frame.atst.pos_embed"].shape[-1])
    depth = 1 + max(int(m.group(1)) for k in chosen if (m := re.match(r"atst_frame\.atst\.blocks\.(\d+)\.", k)))
    shape = {"dim": dim, "depth": depth, "num_heads": max(1, dim // 64)}
    extra = {} if shape == atst.PRESETS["atst_base"] else shape
    kwargs: dict[str, Any] = {"n_classes": n_classes, "encoder_preset": "atst_base", "encoder_kwargs": extra,
                              "rnn_hidden": rnn_hidden // 2}
    model = sed.build("sed_atst", **kwargs)
    _strict(model, chosen, path, "this ATST-SED checkpoint does not have the published CRNN layout")
    names = list(DESED_CLASSES) if n_classes == 10 else [f"class_{i}" for i in range(n_classes)]
    post = {"median_windows": _median_windows(raw, n_classes), "frame_rate_hz": float(model.frame_rate_hz),
            "clip_duration_s": 10.0, "threshold": 0.5}
    return InferenceModel(model.eval(), "detector", names, int(model.sample_rate), str(path), "atst-sed",
                          "sed_atst", dict(model.builder_kwargs), post,
                          mean_teacher=teacher or None, student=student or None,
                          note="" if chosen is teacher else f"{path}: using the student weights")


def _builder_kind(builder: str) -> str:
    if builder in SED_BUILDERS:
        return "detector"
    if builder in TAGGER_BUILDERS:
        return "tagger"
    if builder.startswith("eat"):
        return "encoder"
    return "other"


def _load_ours(raw: Mapping[str, Any], path: Path, weights: str) -> InferenceModel:
    from audiopipe.models import build_model

    builder, kwargs = str(raw["builder"]), dict(raw.get("builder_kwargs") or {})
    try:
        with torch.device("meta"):  # shapes first: forged builder_kwargs (width_mult 400) must not allocate GBs
            skeleton = build_model(builder, **kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: cannot rebuild model '{builder}' ({err}); the checkpoint is from another "
                        "audiopipe version or was edited") from err
    _strict(skeleton, raw["model"], path, "the checkpoint does not fit the model it names", check_only=True)
    try:
        model = build_model(builder, **kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: cannot rebuild model '{builder}' ({err}); the checkpoint is from another "
                        "audiopipe version or was edited") from err
    if builder == "eat_pretrainer":
        raise UserError(f"{path}: an EAT pre-training checkpoint; use data/pretrain_eat/eat.pt or convert it")
    _strict(model, raw["model"], path, "the checkpoint does not fit the model it names")
    teacher = raw.get("mean_teacher")
    if weights == "teacher" and isinstance(teacher, Mapping):
        _strict(model, teacher, path, "its mean_teacher weights do not fit the model")
    kind = _builder_kind(builder)
    names = [str(c) for c in raw.get("class_names") or []]
    if kind in ("tagger", "detector"):
        n_out = _n_outputs(model)
        if n_out is not None and len(names) != n_out:
            raise UserError(f"{path}: checkpoint problem: {len(names)} class names for {n_out} model outputs; "
                            "the file's class_names entry is wrong, re-export or convert it again")
    saved_rate = raw.get("sample_rate")
    sample_rate = int(saved_rate) if saved_rate else int(getattr(model, "sample_rate", 16000))
    post = dict(raw.get("postprocessing") or {})
    return InferenceModel(model.eval(), kind, names, sample_rate, str(path), "audiopipe", builder, kwargs, post,
                          mean_teacher=dict(teacher) if isinstance(teacher, Mapping) else None,
                          student=dict(raw["model"]))


def _n_outputs(model: nn.Module) -> int | None:
    for name in ("dense", "head"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            return int(layer.out_features)
    net = getattr(model, "net", None)
    last = [m for m in (net.modules() if net is not None else []) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if last and isinstance(last[-1], nn.Linear):
        return int(last[-1].out_features)
    return None


def load_for_inference(path: str | Path, *, model_name: str | None = None, weights: str = "teacher",
                       raw: Mapping[str, Any] | None = None) -> InferenceModel:
    """Load our checkpoint or a published one (layouts in the module docstring) in eval mode on the CPU."""
    path = Path(path)
    raw = read_raw(path) if raw is None else raw
    layout = read_layout(raw)
    if layout == "audiopipe":
        return _load_ours(raw, path, weights)
    if layout == "efficientat":
        return _load_efficientat(raw, path, model_name)
    if layout == "eat":
        return _load_eat(raw, path)
    if layout == "atst-sed":
        return _load_atst_sed(raw, path, weights)
    if layout == "lightning":
        raise UserError(f"{path}: a Lightning checkpoint without sed_student/sed_teacher weights (e.g. the ATST-Frame "
                        "encoder atst_as2M.ckpt); it cannot tag or detect on its own, pass an ATST-SED stage-2 file")
    raise UserError(f"{path}: not a checkpoint layout audiopipe knows (ours, EfficientAT mn*/dymn*_as, EAT fairseq or "
                    "Hugging Face, ATST-SED stage 2)")


WHAT = {"tagger": "an audio tagger", "detector": "a sound event detector (SED)", "encoder": "a feature encoder",
        "other": "a model"}
USE = {"tagger": "audiopipe tag", "detector": "audiopipe detect", "encoder": "audiopipe features"}


def require_kind(loaded: InferenceModel, wanted: tuple[str, ...], flag: str = "--checkpoint") -> None:
    """Refuse a checkpoint of the wrong kind once, naming what it is and which command uses it."""
    if loaded.kind in wanted:
        return
    use = USE.get(loaded.kind)
    hint = f"use `{use}` with it" if use else "pass a checkpoint of the right kind"
    raise UserError(f"{flag} {loaded.source}: {WHAT.get(loaded.kind, 'a model')} checkpoint ({loaded.builder}), "
                    f"not {' or '.join(WHAT[k] for k in wanted)}; {hint}", exit_code=2)


def to_payload(loaded: InferenceModel) -> dict[str, Any]:
    """Our documented final-model payload for a loaded checkpoint (what `audiopipe convert` writes)."""
    payload: dict[str, Any] = {
        "builder": loaded.builder,
        "builder_kwargs": loaded.builder_kwargs,
        "model": {k: v.detach() for k, v in (loaded.student or loaded.model.state_dict()).items()},
        "class_names": list(loaded.class_names),
        "sample_rate": int(loaded.sample_rate),
        "config": {"converted_from": loaded.source, "layout": loaded.layout},
        "metrics": {},
    }
    if loaded.kind == "detector":
        payload["postprocessing"] = dict(loaded.postprocessing)
        if loaded.mean_teacher:
            payload["mean_teacher"] = {k: v.detach() for k, v in loaded.mean_teacher.items()}
    return payload
