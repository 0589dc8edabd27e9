"""An ``img2img`` job's init image: how a job names it, the checks it passes, and reading it on a worker.

A job's input names its init image in ``image``, one of:

* ``"upload-<sha256>.png"``: bytes uploaded with the request (the ``image`` file of
  ``POST /v1/images/edits``, or ``image_b64`` in a ``POST /v1/jobs`` body), kept with the uploads
  of the artifact store so that a worker on another machine reads them wherever it reads
  artifacts. The job's recorded input holds this name, never the bytes;
* ``{"job": "<job id>", "artifact": "image-0.png"}``: an artifact of an earlier job (a ``text2img``
  result, say) of the same owner.

The bytes must be an image (PNG, JPEG, WebP, GIF or BMP) whose sides are each from 8 pixels to
``MODELQ_IMAGE_MAX_SIDE``; a 422 names the request's field. Pillow checks them where it is
installed (the ``image`` extra); an API without it checks the format's signature and leaves the
rest to the worker, which checks again before it runs.

Pure Python but for Pillow, imported when an image is read: the API checks requests with it
without importing torch or diffusers.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelq.errors import ArtifactNotFound, InvalidInput
from modelq.jobs.artifacts import LocalArtifactStore, check_artifact_name, check_upload_name

if TYPE_CHECKING:
    from modelq.jobs.artifacts import ArtifactStore
    from modelq.tasks import JobContext

#: The smallest side an init image may have (the latents are an eighth of the image's size).
MIN_SIDE = 8
#: What an image's first bytes say it is, and the suffix its upload is stored under.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"BM", ".bmp"),
)
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)
_JOB_ID = re.compile(r"^[A-Za-z0-9-]{1,100}$")


def _suffix(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((suffix for signature, suffix in _SIGNATURES if data.startswith(signature)), None)


def _check_size(size: tuple[int, int], settings: Any, field: str) -> None:
    width, height = size
    limit = settings.image.max_side
    if min(width, height) < MIN_SIDE:
        raise InvalidInput(f"{field} is {width}x{height} pixels; each side must be at least {MIN_SIDE}", field=field)
    if max(width, height) > limit:
        raise InvalidInput(
            f"{field} is {width}x{height} pixels; the limit is {limit} per side (MODELQ_IMAGE_MAX_SIDE)",
            field=field,
            limit=limit,
        )


def check_image_bytes(data: bytes, settings: Any, field: str = "image") -> str:
    """Check that ``data`` is a readable image within the size caps.

    Args:
        data: the file's bytes.
        settings: the caps (``image_max_side``).
        field: the request field the bytes came in, for the error.

    Returns:
        The suffix the image is stored under (``".png"``, ``".jpg"``, ``".webp"``, ...).

    Raises:
        InvalidInput: empty, not an image, unreadable, or a side out of bounds (``field`` names it).
    """
    if not data:
        raise InvalidInput(f"{field} is empty; send a PNG, JPEG or WebP image", field=field)
    suffix = _suffix(data)
    if suffix is None:
        raise InvalidInput(
            f"{field} is not an image (PNG, JPEG, WebP, GIF or BMP); its first bytes are {data[:8]!r}", field=field
        )
    try:
        from PIL import Image
    except ImportError:  # an API without the image extra: the worker checks the rest
        return suffix
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_size(image.size, settings, field)  # before decoding: a huge image is never decoded
            image.load()
    except InvalidInput:
        raise
    except Exception as exc:  # Pillow's errors: UnidentifiedImageError, OSError (truncated), DecompressionBombError
        raise InvalidInput(f"{field} cannot be read as an image: {exc}", field=field) from None
    return suffix


def decode_b64(value: Any, field: str = "image_b64") -> bytes:
    """The bytes of a base64 string (a ``data:image/png;base64,...`` URL too).

    Raises:
        InvalidInput: not a string, or not base64.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be the image's bytes as a base64 string", field=field)
    text = _DATA_URL.sub("", value.strip(), count=1)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field} is not valid base64", field=field) from None


def store_upload(data: bytes, settings: Any, artifacts: ArtifactStore | None = None, field: str = "image") -> str:
    """Check an uploaded init image and keep it with the uploads; return the name a job names it by.

    Args:
        data: the uploaded bytes.
        settings: the caps, and where artifacts live when ``artifacts`` is not given.
        artifacts: the artifact store (default: the local one under ``settings.artifacts_dir``).
        field: the request field the bytes came in, for the error.

    Returns:
        ``upload-<sha256><suffix>``: the same bytes uploaded twice are one file.

    Raises:
        InvalidInput: the bytes are not an image within the caps.
    """
    suffix = check_image_bytes(data, settings, field)
    store = artifacts if artifacts is not None else LocalArtifactStore(settings.artifacts_dir)
    return store.put_upload(data, suffix)


def check_image_ref(value: Any, field: str = "image") -> str | dict[str, str]:
    """An init image reference's shape: an upload name, or ``{"job": id, "artifact": name}``.

    Raises:
        InvalidInput: anything else (``field`` names it).
    """
    if isinstance(value, str):
        try:
            return check_upload_name(value, field)
        except InvalidInput:
            raise InvalidInput(
                f"{field} must name an uploaded image ('upload-<sha256>.png') or an earlier job's "
                f'artifact ({{"job": "<job id>", "artifact": "image-0.png"}}), not {value!r}',
                field=field,
            ) from None
    if not isinstance(value, dict) or set(value) != {"job", "artifact"}:
        raise InvalidInput(
            f'{field} must be {{"job": "<job id>", "artifact": "<name>"}} or an upload name, not {value!r}', field=field
        )
    job_id, artifact = value["job"], value["artifact"]
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise InvalidInput(f"{field}.job must be a job id, not {job_id!r}", field=field)
    try:
        check_artifact_name(artifact if isinstance(artifact, str) else "")
    except InvalidInput as exc:
        raise InvalidInput(f"{field}.artifact: {exc}", field=field) from None
    return {"job": job_id, "artifact": artifact}


def prepare(data: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Submit time: the job input with its init image as a reference (``image``), never as bytes.

    ``image_b64`` is checked and stored as an upload; ``image`` is checked for its shape, and for
    the file it names (an artifact of a job that another owner ran is refused by the worker, which
    knows who submitted the job, with the same message).

    Args:
        data: the job's input, with exactly one of ``image`` and ``image_b64``.
        settings: the caps, and where artifacts live.

    Returns:
        The input, with ``image`` set and no ``image_b64``.

    Raises:
        InvalidInput: naming ``image`` or ``image_b64``.
    """
    image, b64 = data.get("image"), data.get("image_b64")
    if (image is None) == (b64 is None):
        raise InvalidInput(
            'give the init image as one of image (an upload name or {"job": id, "artifact": name}) '
            "or image_b64 (the image's bytes, base64)",
            field="image",
        )
    rest = {key: value for key, value in data.items() if key != "image_b64"}
    if b64 is not None:
        return {**rest, "image": store_upload(decode_b64(b64), settings, field="image_b64")}
    ref = check_image_ref(image)
    store = LocalArtifactStore(settings.artifacts_dir)
    try:
        if isinstance(ref, str):
            store.open_upload(ref)
        else:
            store.open(ref["job"], ref["artifact"])
    except ArtifactNotFound:
        raise InvalidInput(f"image: {_missing(ref)}", field="image") from None
    return {**rest, "image": ref}


def _missing(ref: str | dict[str, str]) -> str:
    if isinstance(ref, str):
        return f"no uploaded file {ref!r}"
    return f"job {ref['job']!r} has no artifact {ref['artifact']!r}"


def _path(ref: str | dict[str, str], job: JobContext) -> Path:
    try:
        if isinstance(ref, str):
            return job.artifacts.open_upload(ref)
        # Owners see only their own jobs; a job submitted without keys ("") may name any.
        owner = job.store.owner_of(job.id)
        if job.store.get(ref["job"], owner or None, with_position=False) is None:
            raise ArtifactNotFound(ref["job"], ref["artifact"])
        return job.artifacts.open(ref["job"], ref["artifact"])
    except ArtifactNotFound:
        raise InvalidInput(f"image: {_missing(ref)}", field="image") from None


def load(data: dict[str, Any], job: JobContext, width: int | None, height: int | None) -> Any:
    """On the worker: the job's init image as an RGB ``PIL.Image`` of the size the job runs at.

    The size is ``width`` x ``height``; a side not given is the image's own (turned as its EXIF
    orientation says), rounded down to a multiple of 8. An image of another size is resized (Lanczos).

    Args:
        data: the job's input (``image``, or ``image_b64`` for a task run directly).
        job: the running job (its stores, its settings' caps, its owner).
        width: the requested width, or None.
        height: the requested height, or None.

    Raises:
        InvalidInput: the reference names nothing this job may read, or the bytes are not an image within the caps.
    """
    from PIL import Image, ImageOps

    settings = job.settings
    if data.get("image") is None and data.get("image_b64") is not None:
        raw = decode_b64(data["image_b64"])
    else:
        raw = _path(check_image_ref(data.get("image")), job).read_bytes()
    check_image_bytes(raw, settings, "image")
    with Image.open(io.BytesIO(raw)) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")  # a photo the way up its camera said
    size = (width or rgb.width // 8 * 8, height or rgb.height // 8 * 8)
    return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.LANCZOS)
