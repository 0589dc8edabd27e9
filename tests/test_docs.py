"""The documentation site builds with no broken link or anchor (``mkdocs build --strict``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_documentation_builds_strict_with_every_link_and_anchor_found(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
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


def test_the_configuration_reference_lists_every_setting_as_the_code_declares_it() -> None:
    from modelq.config import WORKLOAD_GROUPS, Settings
    from modelq.config_reference import BEGIN, END, markdown

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert BEGIN in page and END in page
    written = page.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert written == markdown(), "stale: run python -m modelq.config_reference --write docs/configuration.md"
    # each setting, with its environment name and a meaning; a workload's group, each of its settings
    names = [
        f"{name}_{inner}" if name in WORKLOAD_GROUPS else name
        for name in Settings.model_fields
        for inner in (WORKLOAD_GROUPS[name].model_fields if name in WORKLOAD_GROUPS else [""])
    ]
    assert "llm_timeout" in names and "llm" not in names
    for name in names:
        row = next(line for line in written.splitlines() if line.startswith(f"| `MODELQ_{name.upper()}` |"))
        assert row.rstrip(" |").split(" | ")[-1].strip(), f"MODELQ_{name.upper()} has no meaning: add a #: comment"
