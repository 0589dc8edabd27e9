"""The house rules CI checks: the code passes ruff's lint and is in ruff's format (both configured in
pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_code_passes_ruff_lint() -> None:
    # ruff's wheel puts its binary beside this interpreter
    ruff = Path(sys.executable).with_name("ruff")
    checked = subprocess.run(
        [str(ruff), "check", "--output-format", "concise", "src", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-1000:]


def test_the_code_is_in_ruff_format() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    checked = subprocess.run(
        [str(ruff), "format", "--check", "src", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, "run `ruff format src tests`:\n" + checked.stdout[-3000:] + checked.stderr[-1000:]


def test_imports_follow_the_layers() -> None:
    # the contracts are in pyproject.toml ([tool.importlinter]): an import may point down, never up
    lint_imports = Path(sys.executable).with_name("lint-imports")
    checked = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-1000:]


def test_the_built_in_workloads_register_the_way_a_plugin_does() -> None:
    # the app factory names no workload: each comes from the entry point group a plugin package uses
    from importlib.metadata import entry_points

    declared = {point.name: point.value for point in entry_points(group="modelq.workloads")}
    shipped = {
        path.name
        for path in (ROOT / "src" / "modelq" / "workloads").iterdir()
        if (path / "__init__.py").is_file() or (path.suffix == ".py" and path.stem != "__init__")
    }
    assert {f"modelq.workloads.{name.removesuffix('.py')}" for name in shipped} == set(declared.values())
    assert "modelq.workloads." not in (ROOT / "src" / "modelq" / "celery_app.py").read_text()


def test_every_module_has_its_place_in_the_layers() -> None:
    # a new top-level module must be placed in a layer (pyproject.toml), or the contracts miss it
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    placed = {name for c in contracts for name in [*c["source_modules"], *c["forbidden_modules"]]}
    package = ROOT / "src" / "modelq"
    modules = {f"modelq.{p.stem}" for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    modules |= {f"modelq.{p.name}" for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert not modules - placed, sorted(modules - placed)
