"""Published checkpoints through `tag` / `detect` / `features` / `convert`, in each official file layout.

Checkpoints are built with random weights under the exact official key names (EfficientAT and ATST-SED
shapes: the published sizes, checked against tests/golden; EAT: the official key names at a reduced width,
since a base-size file would be 350 MB) and run on a demo recording (data/download, else a generated wav).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiopipe.cli import main
from audiopipe.inference.checkpoints import ATST_SED_MEDIAN_WINDOWS, load_for_inference
from audiopipe.inference.classes import DESED_CLASSES, audioset_classes
from audiopipe.models import build_model
from audiopipe.models.eat.encoder import sincos_2d

ROOT = Path(__file__).parents[2]
GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo recording when the pipeline has downloaded them, else a 6-s generated tone + noise."""
    for folder in (ROOT / "data" / "download" / "realmix" / "audio", ROOT / "data" / "resample" / "realmix" / "audio"):
        found = sorted(folder.glob("*/*.wav"))
        if found:
            return found[0]
    path = tmp_path_factory.mktemp("audio") / "generated.wav"
    t = np.arange(6 * 32000) / 32000
    sig = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(path, sig.astype(np.float32), 32000)
    return path


def _golden(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(s) for k, s in json.loads((GOLDEN / name).read_text())["keys"]}


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _tags(out: str) -> list[dict]:
    return json.loads(out)[0]["tags"]


# ---------------------------------------------------------------- EfficientAT


@pytest.fixture(scope="module")
def mn10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    state = build_model("mn10_as").state_dict()  # the bare MobileNetV3 = the published file's keys
    assert {k: tuple(v.shape) for k, v in state.items()} == _golden("mobilenet_mn10_keys.json")
    path = tmp_path_factory.mktemp("efficientat") / "mn10_as_mAP_471.pt"  # the release's file name
    torch.save(state, path)
    return path


def test_efficientat_mn_state_dict_tags_with_audioset_names(mn10: Path, audio: Path, capsys) -> None:
    code, out, err = _cli(["tag", str(audio), "--checkpoint", str(mn10), "--top-k", "5", "--json"], capsys)
    assert code == 0, err
    tags = _tags(out)
    assert len(tags) == 5 and all(t["label"] in audioset_classes() for t in tags)
    assert not any(re.fullmatch(r"class_\d+|\d+", t["label"]) for t in tags)


def test_efficientat_architecture_from_model_flag(mn10: Path, audio: Path, tmp_path: Path, capsys) -> None:
    anonymous = tmp_path / "weights.pt"
    anonymous.write_bytes(mn10.read_bytes())
    code, _, err = _cli(["tag", str(audio), "--checkpoint", str(anonymous)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--model" in err
    code, out, _ = _cli(["tag", str(audio), "--checkpoint", str(anonymous), "--model", "mn10_as", "--json"], capsys)
    assert code == 0
    _, reference, _ = _cli(["tag", str(audio), "--checkpoint", str(mn10), "--json"], capsys)
    assert _tags(out) == _tags(reference)
    code, _, err = _cli(["tag", str(audio), "--checkpoint", str(anonymous), "--model", "mn04_as"], capsys)
    assert code == 1 and "mn04_as" in err and len(err.strip().splitlines()) == 1  # wrong width: one line


def test_efficientat_dymn_state_dict(audio: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    state = build_model("dymn10_as").state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == _golden("dymn_dymn10_keys.json")
    path = tmp_path / "dymn10_as.pt"
    torch.save(state, path)
    code, out, err = _cli(["tag", str(audio), "--checkpoint", str(path), "--top-k", "3", "--json"], capsys)
    assert code == 0, err
    assert all(t["label"] in audioset_classes() for t in _tags(out))


def test_convert_efficientat_gives_the_same_tags(mn10: Path, audio: Path, tmp_path: Path, capsys) -> None:
    out_ckpt = tmp_path / "mn10.pt"
    code, out, _ = _cli(["convert", str(mn10), str(out_ckpt)], capsys)
    assert code == 0 and "mn_tagger" in out
    payload = torch.load(out_ckpt, weights_only=True)
    assert payload["builder"] == "mn_tagger" and len(payload["class_names"]) == 527
    _, converted, _ = _cli(["tag", str(audio), "--checkpoint", str(out_ckpt), "--json"], capsys)
    _, official, _ = _cli(["tag", str(audio), "--checkpoint", str(mn10), "--json"], capsys)
    assert _tags(converted) == _tags(official)
    code, _, err = _cli(["convert", str(mn10), str(out_ckpt)], capsys)  # never overwrites silently
    assert code == 2 and "--force" in err


# ---------------------------------------------------------------- EAT

EAT_SHAPE = {"embed_dim": 128, "depth": 2, "num_heads": 2}


class DictConfig:
    """Stands in for the omegaconf config object that fairseq pickles next to the weights."""

    def __init__(self, content: dict) -> None:
        self._content = content


@pytest.fixture(scope="module")
def eat_tagger() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("eat_tagger", size="eat_base", n_classes=527, sample_rate=16000, target_frames=1024,
                       drop_path_rate=0.0, **EAT_SHAPE).eval()


def _eat_official(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Our EATTagger keys -> fairseq fine-tuned (`model.` + fairseq names) or Hugging Face names (spec eat.md §2.6)."""
    enc = "modality_encoders.IMAGE." if layout == "fairseq" else ""
    norm = "modality_encoders.IMAGE.context_encoder.norm." if layout == "fairseq" else "pre_norm."
    rename = {"encoder.patch_embed.proj.": f"{enc}local_encoder.proj.", "encoder.cls_token": f"{enc}extra_tokens",
              "encoder.norm_pre.": norm, "encoder.blocks.": "blocks."}
    out = {}
    for key, value in state.items():
        for ours, theirs in rename.items():
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        out["model." + key] = value
    dim = EAT_SHAPE["embed_dim"]
    out[f"model.{enc}fixed_positional_encoder.positions"] = sincos_2d(dim, 64, 8)[None]  # 512 rows (old files)
    return out


@pytest.mark.parametrize("layout", ["fairseq", "hf"])
def test_eat_finetuned_layouts_tag_like_the_model(layout: str, eat_tagger: torch.nn.Module, audio: Path,
                                                  tmp_path: Path, capsys) -> None:
    state = _eat_official(eat_tagger.state_dict(), layout)
    if layout == "fairseq":
        path = tmp_path / "EAT-base_epoch30_ft.pt"
        # a pickled config class: must be read without running it (weights_only + inert placeholders)
        torch.save({"model": state, "cfg": DictConfig({"model": {"_name": "mae_image_classification"}})}, path)
        with pytest.raises(Exception):  # noqa: B017 - plain weights_only loading refuses the file
            torch.load(path, weights_only=True)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    code, out, err = _cli(["tag", str(audio), "--checkpoint", str(path), "--top-k", "4", "--json", "--windows",
                           "--window-s", "5", "--hop-s", "5"], capsys)
    assert code == 0, err
    from audiopipe.inference.stream import audio_blocks

    first = np.concatenate(list(audio_blocks(audio, 16000)))[: 5 * 16000]
    first = np.pad(first, (0, 5 * 16000 - first.size))
    with torch.no_grad():
        expected = torch.sigmoid(eat_tagger(torch.from_numpy(np.clip(first, -1, 1))[None]))[0].numpy()
    first_window = json.loads(out)[0]["windows"][0]["tags"]
    names = audioset_classes()
    assert [t["label"] for t in first_window] == [names[i] for i in np.argsort(-expected, kind="stable")[:4]]
    for t in first_window:
        assert t["probability"] == pytest.approx(float(expected[names.index(t["label"])]), abs=2e-4)
    assert all(t["label"] in audioset_classes() for t in _tags(out))


def test_eat_pretrained_layout_gives_features_and_is_refused_by_tag(audio: Path, tmp_path: Path, capsys) -> None:
    """A fairseq pre-training file: student encoder + CNN decoder + `_ema` teacher (spec eat.md §2.6)."""
    torch.manual_seed(0)
    pretrainer = build_model("eat_pretrainer", size="eat_demo", **EAT_SHAPE)
    ours = pretrainer.state_dict()
    student = {k: v for k, v in ours.items() if k.startswith("encoder.")}
    state = {k.removeprefix("model."): v for k, v in _eat_official(student, "fairseq").items()}
    for key, value in ours.items():
        if key.startswith("decoder.convs."):
            j, rest = key.removeprefix("decoder.convs.").split(".", 1)
            state[f"modality_encoders.IMAGE.decoder.blocks.{j}.0.{rest}"] = value
        elif key.startswith("decoder.proj."):
            state["modality_encoders.IMAGE.decoder." + key.removeprefix("decoder.")] = value
    teacher = {"encoder." + k.removeprefix("ema_teacher.module."): v + 0.5 for k, v in ours.items()
               if k.startswith("ema_teacher.module.")}  # differs from the student
    state["_ema"] = {k.removeprefix("model."): v for k, v in _eat_official(teacher, "fairseq").items()}
    path = tmp_path / "EAT-base_epoch30_pt.pt"
    torch.save({"model": state, "cfg": {"model": {"_name": "data2vec_multi"}}}, path)
    code, _, err = _cli(["features", str(audio), "--checkpoint", str(path), "--out-dir", str(tmp_path / "f"),
                         "--granularity", "utterance", "--device", "cpu"], capsys)
    assert code == 0, err
    features = np.load(tmp_path / "f" / f"{audio.stem}.npy")
    assert features.shape == (EAT_SHAPE["embed_dim"],)
    from audiopipe.audio.io import load_audio
    from audiopipe.models.eat.frontend import EATFrontEnd

    wave, rate = load_audio(audio, mono=True)
    with torch.no_grad():  # the student encoder's CLS output, not the teacher's
        expected = pretrainer.encoder.eval()(EATFrontEnd(rate, None)(torch.from_numpy(wave)[None]))[0, 0].numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    code, _, err = _cli(["tag", str(audio), "--checkpoint", str(path)], capsys)
    assert code == 2 and "features" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- ATST-SED


@pytest.fixture(scope="module")
def atst_sed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage-2 Lightning checkpoint at the published size, from the spec's key tables (not from our model)."""
    keys = {**_golden("sed_atst_crnn_keys.json"),
            **{f"atst_frame.atst.{k}": s for k, s in _golden("atst_keys.json").items()}}
    generator = torch.Generator().manual_seed(0)
    student = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            student[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            student[key] = torch.ones(shape)
        elif key.endswith("running_mean"):
            student[key] = torch.zeros(shape)
        else:
            student[key] = 0.02 * torch.randn(shape, generator=generator)
    student["dense.bias"] = torch.full((10,), -20.0)  # the student never fires
    teacher = dict(student)  # the same tensors (stored once) except the head bias: the teacher always hears a Dog
    teacher["dense.bias"] = torch.tensor([-20.0] * 4 + [20.0] + [-20.0] * 5)
    state = {**{f"sed_student.{k}": v for k, v in student.items()},
             **{f"sed_teacher.{k}": v for k, v in teacher.items()},
             "mel_spec.spectrogram.window": torch.hann_window(2048), "mel_spec.mel_scale.fb": torch.zeros(1025, 128)}
    path = tmp_path_factory.mktemp("atst") / "Stage2_wo_ext.ckpt"
    torch.save({"epoch": 250, "global_step": 7000, "state_dict": state, "sed_student": student,
                "sed_teacher": teacher, "hyper_parameters": {"training": {"median_window": ATST_SED_MEDIAN_WINDOWS}}},
               path)
    return path


def test_atst_sed_stage2_checkpoint_detects_with_desed_classes(atst_sed: Path, audio: Path, tmp_path: Path,
                                                               capsys) -> None:
    loaded = load_for_inference(atst_sed)
    assert loaded.kind == "detector" and loaded.class_names == list(DESED_CLASSES)
    assert loaded.postprocessing["median_windows"] == [6, 20, 7, 4, 7, 6, 6, 6, 6, 6]
    tsv = tmp_path / "events.tsv"
    code, out, err = _cli(["detect", str(audio), "--checkpoint", str(atst_sed), "--json", "--tsv", str(tsv)], capsys)
    assert code == 0, err
    (result,) = json.loads(out)
    assert [e["label"] for e in result["events"]] == ["Dog"]
    assert result["events"][0]["onset"] == 0.0
    assert result["events"][0]["offset"] == pytest.approx(result["duration_s"], abs=0.07)
    assert tsv.read_text().splitlines()[1].startswith(str(audio.absolute()) + "\t")
    code, out, _ = _cli(["detect", str(audio), "--checkpoint", str(atst_sed), "--weights", "student", "--json"],
                        capsys)
    assert code == 0 and json.loads(out)[0]["events"] == []
    code, _, err = _cli(["tag", str(audio), "--checkpoint", str(atst_sed)], capsys)
    assert code == 2 and "detect" in err and len(err.strip().splitlines()) == 1


def test_atst_sed_convert_keeps_both_weight_sets(atst_sed: Path, audio: Path, tmp_path: Path, capsys) -> None:
    out_ckpt = tmp_path / "atst_sed.pt"
    assert _cli(["convert", str(atst_sed), str(out_ckpt)], capsys)[0] == 0
    payload = torch.load(out_ckpt, weights_only=True)
    assert payload["builder"] == "sed_atst" and payload["class_names"] == list(DESED_CLASSES)
    assert set(payload["model"]) == set(payload["mean_teacher"])
    code, out, _ = _cli(["detect", str(audio), "--checkpoint", str(out_ckpt), "--json"], capsys)
    assert code == 0 and [e["label"] for e in json.loads(out)[0]["events"]] == ["Dog"]
    code, out, _ = _cli(["detect", "--list-classes", "--checkpoint", str(out_ckpt)], capsys)
    assert out.splitlines() == [f"{i}\t{c}" for i, c in enumerate(DESED_CLASSES)]


def test_export_onnx_of_a_published_efficientat_file(mn10: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _cli(["export", "onnx", str(mn10), str(tmp_path / "mn10.onnx"), "--seconds", "2"], capsys)
    assert code == 0, err
    assert (tmp_path / "mn10.onnx").stat().st_size > 1_000_000
