"""The documentation site builds with no broken link or anchor (``mkdocs build --strict``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_documentation_builds_strict_with_every_link_and_anchor_found(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    # every page of the navigation is in the site, the scheduling rules among them
    assert "starvation bound" in (tmp_path / "site/models/index.html").read_text()


def test_every_page_in_docs_is_in_the_navigation() -> None:
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(items: list) -> set[str]:
        found: set[str] = set()
        for item in items:
            for value in item.values():
                found |= pages(value) if isinstance(value, list) else {value}
        return found

    assert pages(nav) == {p.name for p in (ROOT / "docs").glob("*.md")}
