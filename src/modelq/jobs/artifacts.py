"""Artifact storage: files a job produces (images, documents), kept beside its record.

:class:`ArtifactStore` is the small interface an object store can implement later;
:class:`LocalArtifactStore` keeps files under ``MODELQ_HOME/artifacts/<job id>/``.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import Protocol

from modelq.errors import ArtifactNotFound, InvalidInput

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_artifact_name(name: str) -> str:
    if not _SAFE_NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"artifact name {name!r} must be 1-200 letters, digits, '.', '_' or '-', not starting with '.'",
            field="name",
        )
    return name


class ArtifactStore(Protocol):
    def put(self, job_id: str, name: str, data: bytes, content_type: str | None = None) -> dict: ...

    def open(self, job_id: str, name: str) -> Path: ...


class LocalArtifactStore:
    """Artifacts as plain files on a local (or shared) file system."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, job_id: str, name: str, data: bytes, content_type: str | None = None) -> dict:
        check_artifact_name(name)
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / name)  # readers never see a half-written file
        return {
            "name": name,
            "size": len(data),
            "content_type": content_type or mimetypes.guess_type(name)[0] or "application/octet-stream",
        }

    def open(self, job_id: str, name: str) -> Path:
        check_artifact_name(name)
        path = self.root / job_id / name
        if not path.is_file():
            raise ArtifactNotFound(job_id, name)
        return path
