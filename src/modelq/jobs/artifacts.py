"""Artifact storage: files a job produces (images, documents), kept beside its record.

:class:`ArtifactStore` is the small interface an object store can implement later;
:class:`LocalArtifactStore` keeps files under ``MODELQ_HOME/artifacts/<job id>/``.

Uploads (a job's input file, such as the PDF of an ``enrich`` job) are kept in the same store,
under ``uploads/``, so a worker on another machine reads them wherever it reads artifacts.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import uuid
from pathlib import Path
from typing import Protocol

from modelq.errors import ArtifactNotFound, InvalidInput

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: The folder of uploaded input files; job ids are UUIDs, so it is never a job's folder.
UPLOADS = "uploads"
_UPLOAD_NAME = re.compile(r"^upload-[0-9a-f]{64}(\.[a-z0-9]{1,10})?$")


def check_artifact_name(name: str) -> str:
    if not _SAFE_NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"artifact name {name!r} must be 1-200 letters, digits, '.', '_' or '-', not starting with '.'",
            field="name",
        )
    return name


def check_upload_name(name: str, field: str = "upload") -> str:
    if not isinstance(name, str) or not _UPLOAD_NAME.match(name):
        raise InvalidInput(f"{field} must name an uploaded file ('upload-<sha256>.pdf'), not {name!r}", field=field)
    return name


class ArtifactStore(Protocol):
    def put(self, job_id: str, name: str, data: bytes, content_type: str | None = None) -> dict: ...

    def open(self, job_id: str, name: str) -> Path: ...

    def put_upload(self, data: bytes, suffix: str = "") -> str: ...

    def open_upload(self, name: str) -> Path: ...


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

    def put_upload(self, data: bytes, suffix: str = "") -> str:
        """Store an uploaded input file and return the name a job's input refers to it by.

        The name is the content's SHA-256: the same bytes uploaded twice are one file, and a job
        can only name a file whose bytes its submitter had.
        """
        name = check_upload_name(f"upload-{hashlib.sha256(data).hexdigest()}{suffix}")
        folder = self.root / UPLOADS
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if not path.is_file():
            tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"  # two identical uploads at once never share a temp file
            tmp.write_bytes(data)
            tmp.replace(path)
        return name

    def open_upload(self, name: str) -> Path:
        check_upload_name(name)
        path = self.root / UPLOADS / name
        if not path.is_file():
            raise ArtifactNotFound(UPLOADS, name)
        return path
