"""Files on disk, the bottom layer every other layer uses: atomic writes, JSON, checksums, checkpoints.

- `atomic_write(path)` yields a temporary sibling of `path` and renames it over `path` when the block succeeds;
  on any failure the temporary file is deleted and `path` is left as it was. `write_text_atomic` and
  `write_json_atomic` (sorted keys, indented) are built on it.
- `file_sha256` / `file_digest` name a file by content (manifests, downloads, resume keys).
- Checkpoints: every payload written by `save_checkpoint` carries `audiopipe_sha256`, a digest of everything
  else in it; `load_checkpoint` (`weights_only=True`, no pickled code runs) recomputes it, so flipped bytes
  inside a tensor are an error instead of silently different predictions.
- `load_state_dict_strict` / `check_state_dict`: exact keys and shapes, else `CheckpointError` (the one
  exception type for a file that cannot be read or does not fit its model).

Final-model payload (see docs/architecture.md): `{"builder", "builder_kwargs", "model", "class_names",
"sample_rate", "config", "metrics"}`; resume payloads written by `training.loop.fit` add optimizer,
scheduler, RNG and progress fields.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a checkpoint is handled: text and JSON writers stay light
    import torch
    from torch import nn


def atomic_target(path: Path, suffix: str = ".part") -> Path:
    """Create and return an empty temporary sibling of `path` (same folder, so the final rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_write(path: str | Path, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; rename it over `path` if the block succeeds, else delete it.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_write(out) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
        ('hello', ['a.txt'])
    """
    path = Path(path)
    tmp = atomic_target(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a small text file atomically (temp file + rename)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj: object) -> None:
    """Write JSON (sorted keys, indented) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def file_digest(path: str | Path, algo: str = "sha256", chunk_bytes: int = 1 << 20) -> str:
    """Hex digest of a file's bytes with `algo` (sha256, or md5 for the pins Zenodo publishes), read in chunks."""
    digest = hashlib.new(algo, usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (manifest `sha256` column, download checksums, resume keys)."""
    return file_digest(path, "sha256")


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not fit the model (names the file and what to do)."""


CHECKSUM_KEY = "audiopipe_sha256"  # sha256 of the rest of the payload (`payload_digest`), written by save_checkpoint


def payload_digest(payload: Any) -> str:
    """sha256 over a payload's structure, its tensors' dtype/shape/bytes and its other values (keys sorted)."""
    import torch

    digest = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{data.dtype}{tuple(value.shape)}".encode())
            digest.update(data.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key in sorted(value, key=str):
                if key != CHECKSUM_KEY:
                    digest.update(f"K{key!r}".encode())
                    walk(value[key])
        elif isinstance(value, list | tuple):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                walk(item)
        else:
            digest.update(f"V{value!r}".encode())

    walk(payload)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` plus its checksum (`CHECKSUM_KEY`) with torch.save to a temp file, then rename it over `path`."""
    import torch

    path = Path(path)
    payload = {**payload, CHECKSUM_KEY: payload_digest(payload)}
    try:
        with atomic_write(path, suffix=".tmp") as tmp, open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except (OSError, RuntimeError) as err:
        # torch's zip writer turns a full disk into "RuntimeError: [enforce fail ...] unexpected pos" raised while
        # handling the OSError; name the file and the real cause either way
        cause = err if isinstance(err, OSError) else err.__context__
        if not isinstance(cause, OSError):
            raise
        raise OSError(cause.errno, f"{path}: cannot write checkpoint ({cause.strerror or cause}); free disk space or "
                      "choose another output folder, then rerun the stage (nothing was replaced)") from err
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code.

    Raises:
        CheckpointError: missing, truncated or unsafe file (the message says which and what to do).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; run the stage that writes it (dvc repro)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError ... depending on damage
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"{path}: refused to load, the file contains pickled Python objects (possible code execution). "
                "Load it only if you trust its source, and re-save it as a plain state dict."
            ) from err
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {text[:200]}); "
                              "the file is truncated or not a torch checkpoint; rerun the stage that wrote it "
                              "(`dvc repro`), or pass another file") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict payload, got {type(payload).__name__}")
    stored = payload.pop(CHECKSUM_KEY, None)  # files from other tools have none
    if stored is not None and stored != payload_digest(payload):
        raise CheckpointError(f"{path}: checkpoint is corrupted (its weights do not match the checksum written "
                              "with them); restore it from a backup or `dvc pull`, or rerun the stage that wrote it")
    return payload


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """`model.load_state_dict(strict=True)` with an error that lists missing, unexpected and mis-shaped keys."""
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError unless `state_dict` has exactly `model`'s keys and shapes (works on meta models)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:10]) + (f" ... (+{len(keys) - 10} more)" if len(keys) > 10 else "")

        parts = [f"{source}: checkpoint does not match {type(model).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {show(shapes)}")
        parts.append("check that the model name/size in params matches the checkpoint")
        raise CheckpointError("; ".join(parts))
