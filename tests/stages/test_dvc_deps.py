"""dvc.yaml lists honest deps: every src module a stage script imports (transitively, statically) is a dep.

Exempt: package `__init__.py` files, `audiopipe.tracking` (MLflow logging changes no output) and `config/`
(its effect reaches a stage through the `params:` it lists). Registry strings (`build_model("mn_tagger")`) are
not followed, so model families a stage builds by name stay listed by hand.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
EXEMPT_PREFIXES = ("src/audiopipe/tracking/",)
EXEMPT_FILES = ("src/audiopipe/config/loading.py", "src/audiopipe/config/sections.py",  # params deps
                "src/audiopipe/stage_lock.py")  # the lock writes none


def _module_file(module: str) -> Path | None:
    path = ROOT / "src" / Path(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("audiopipe"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("audiopipe"))
    return found


def _closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if str(path.relative_to(ROOT)).startswith(EXEMPT_PREFIXES):
            continue  # tracking logs models and metrics; what it imports for that changes no stage output
        for module in _imported_modules(path):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                found = _module_file(".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def _covered(relative: str, deps: list[str]) -> bool:
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_every_imported_module(stage: str) -> None:
    deps = [str(d) for d in STAGES[stage].get("deps", [])]
    scripts = [d for d in deps if d.startswith("stages/") and d.endswith(".py")]
    assert scripts, f"{stage}: its stage script must be a dep"
    missing = sorted(
        rel
        for path in _closure(ROOT / scripts[0])
        if (rel := path.relative_to(ROOT).as_posix()).startswith("src/")
        and not rel.endswith("__init__.py")
        and not rel.startswith(EXEMPT_PREFIXES)
        and rel not in EXEMPT_FILES
        and not _covered(rel, deps)
    )
    assert not missing, f"dvc.yaml stage {stage!r} imports but does not depend on: {missing}"
