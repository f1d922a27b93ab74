"""Dependencies point downward: `storage` at the bottom, `models/` below `training/`, config read at the edge.

Every `import` / `from ... import` in a package's files is scanned with `ast`, including the lazy imports inside
functions, so a late `from audiopipe.training... import` in a model file fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "audiopipe"
UPPER = ("audiopipe.training", "audiopipe.evaluation", "audiopipe.inference", "audiopipe.commands",
         "audiopipe.tracking", "audiopipe.config", "audiopipe.sweep", "audiopipe.claims", "audiopipe.cli")

# package or module under src/audiopipe -> module prefixes it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "storage.py": ("audiopipe",),  # the bottom layer: atomic writes, JSON, checksums, checkpoints
    "audio": ("audiopipe.data", "audiopipe.models", "audiopipe.losses", "audiopipe.metrics", *UPPER),
    "losses": ("audiopipe.data", "audiopipe.models", *UPPER),
    "models": UPPER,
    "evaluation": ("audiopipe.training", "audiopipe.commands", "audiopipe.sweep", "audiopipe.claims", "audiopipe.cli"),
    # training tasks see tracking only as a duck-typed `tracker`; the stage helper (training/stage.py) opens the run
    "training": ("audiopipe.evaluation", "audiopipe.inference", "audiopipe.commands", "audiopipe.sweep",
                 "audiopipe.claims", "audiopipe.cli"),
}


def imported_modules(path: Path) -> list[str]:
    """Absolute module names imported anywhere in `path` (top level and inside functions)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def _files(part: str) -> list[Path]:
    target = SRC / part
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(part: str) -> None:
    files = _files(part)
    assert files, f"src/audiopipe/{part} not found; update FORBIDDEN"
    upward = sorted(
        f"{path.relative_to(SRC.parent)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN[part])
    )
    assert not upward, "imports pointing upward:\n" + "\n".join(upward)


def test_scanner_sees_lazy_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from audiopipe.training.loop import fit\n    import audiopipe.config\n")
    assert imported_modules(source) == ["audiopipe.training.loop", "audiopipe.config"]


def test_no_empty_packages() -> None:
    empty = sorted(str(d.relative_to(SRC.parent)) for d in SRC.rglob("*") if d.is_dir() and d.name != "__pycache__"
                   and not any(p.suffix == ".py" and p.name != "__init__.py" for p in d.rglob("*.py"))
                   and (d / "__init__.py").is_file())
    assert not empty, f"packages without modules: {empty}"
