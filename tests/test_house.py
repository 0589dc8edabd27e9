"""The house rules CI checks: the code passes ruff's lint (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_code_passes_ruff_lint() -> None:
    # ruff's wheel puts its binary beside this interpreter
    ruff = Path(sys.executable).with_name("ruff")
    checked = subprocess.run([str(ruff), "check", "--output-format", "concise", "src", "tests"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-1000:]
