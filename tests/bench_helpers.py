"""Running ``modelq bench`` as a user does, for the bench tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelq.testing import child_env

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def bench(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelq", "bench", *args],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_json(tmp_path: Path, scenario: str, timeout: float = 120) -> tuple[dict[str, Any], Path]:
    out = tmp_path / "out"
    proc = bench(tmp_path, scenario, "--quick", "--json", "--out", str(out), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Exactly one JSON object on stdout, nothing else.
    figures = json.loads(proc.stdout)
    assert isinstance(figures, dict)
    assert proc.stdout.strip().count("\n") == 0
    return figures, out


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE
