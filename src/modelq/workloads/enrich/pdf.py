"""PDF reading with pypdfium2: checks on the uploaded bytes, page text, page images.

pypdfium2 is imported when a PDF is first read (extra ``pdf``), so importing modelq stays light.
PDFium is not thread-safe, not even across documents, and both the ``gpu`` queue's threads pool
and the API's thread pool may read PDFs at once: every PDFium call here holds one process-wide
lock. ctypes releases the GIL during the calls, so other threads (embedding) go on meanwhile.

A PDF that cannot be used raises :class:`~modelq.errors.InvalidDocument` with a message that
says what is wrong and what to do; the same bytes always fail the same way, so it is never retried.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from modelq.errors import InvalidDocument, MissingDependency

PDF_MAGIC = b"%PDF-"
#: PDF readers accept a header anywhere in the first KiB (some generators put junk before it).
HEADER_WINDOW = 1024
#: The most pixels one page image may have (about 50 MB as RGB); a larger page is rendered smaller.
MAX_RENDER_PIXELS = 4096 * 4096

_LOCK = threading.RLock()


def pdfium() -> ModuleType:
    """The ``pypdfium2`` module, imported on first use."""
    try:
        import pypdfium2
    except ImportError as exc:
        raise MissingDependency("pypdfium2", "pdf") from exc
    return pypdfium2


def check_upload(data: bytes, max_bytes: int, field: str = "file") -> None:
    """Refuse, before anything is queued, bytes that are empty, too large or not a PDF at all.

    Raises:
        InvalidDocument: with ``field`` naming the form field and, over the cap, ``limit``.
    """
    if not data:
        raise InvalidDocument(f"{field} is empty; upload a PDF document", reason="empty", field=field)
    if len(data) > max_bytes:
        raise InvalidDocument(
            f"{field} is {len(data)} bytes; the limit is {max_bytes} bytes (MODELQ_MAX_PDF_BYTES)",
            reason="too_large",
            field=field,
            limit=max_bytes,
        )
    if PDF_MAGIC not in data[:HEADER_WINDOW]:
        raise InvalidDocument(
            f"{field} is not a PDF: it does not start with {PDF_MAGIC.decode()}", reason="not_pdf", field=field
        )


def page_count(data: bytes) -> int | None:
    """How many pages the PDF has, or None when PDFium cannot open it (its job will say why)."""
    try:
        with open_pdf(data) as reader:
            return reader.pages
    except InvalidDocument:
        return None


def check_pages(pages: int, max_pages: int, field: str = "file", name: str | None = None) -> None:
    """Raises InvalidDocument when a PDF has more pages than ``max_pages``."""
    if pages > max_pages:
        raise InvalidDocument(
            f"{name or field} has {pages} pages; the limit is {max_pages} pages (MODELQ_MAX_PDF_PAGES)",
            reason="too_large",
            field=field,
            limit=max_pages,
        )


@dataclass(frozen=True)
class Page:
    """One page read from a PDF."""

    number: int  # 1-based, as people count pages
    text: str
    width: float  # in points (1/72 inch)
    height: float
    png: bytes
    pixels: tuple[int, int]  # the PNG's width and height


class PdfReader:
    """An open PDF (from :func:`open_pdf`): its page count, and each page's text and image."""

    def __init__(self, document: Any, data: bytes) -> None:
        self._document = document
        self._data = data  # PDFium reads from this buffer until the document is closed
        self.pages = len(document)

    def read(self, index: int, scale: float = 1.0) -> Page:
        """Page ``index`` (0-based): its text and a PNG rendered at ``scale`` x 72 dpi.

        Raises:
            InvalidDocument: the page cannot be read (damaged content).
        """
        lib = pdfium()
        try:
            with _LOCK:
                page = self._document[index]
                try:
                    width, height = page.get_size()
                    text = _page_text(page)
                    bitmap = page.render(scale=fit_scale(width, height, scale))
                    try:
                        image = bitmap.to_pil().convert("RGB")  # a copy: the bitmap's memory is freed below
                    finally:
                        bitmap.close()
                finally:
                    page.close()
        except lib.PdfiumError as exc:
            raise InvalidDocument(
                f"page {index + 1} of the PDF is damaged and cannot be read ({exc})", reason="damaged", page=index + 1
            ) from None
        png = io.BytesIO()
        image.save(png, format="PNG")  # outside the lock: PDFium is not involved
        return Page(number=index + 1, text=text, width=width, height=height, png=png.getvalue(), pixels=image.size)


@contextmanager
def open_pdf(source: bytes | Path, max_pages: int | None = None) -> Iterator[PdfReader]:
    """Open a PDF (bytes, or a file to read) and close it after the block.

    Raises:
        InvalidDocument: it is encrypted, damaged, not a PDF, has no pages or more than ``max_pages``.
    """
    lib = pdfium()
    data = source.read_bytes() if isinstance(source, Path) else bytes(source)
    with _LOCK:
        document = lib.PdfDocument(_load(lib, data))
    try:
        reader = PdfReader(document, data)
        if max_pages is not None:
            check_pages(reader.pages, max_pages, field="pdf", name="the PDF")
        yield reader
    finally:
        with _LOCK:
            document.close()


def _load(lib: ModuleType, data: bytes) -> Any:
    """A raw PDFium document handle. Loaded here rather than by ``PdfDocument(data)``: that reads
    PDFium's last error for a document that has no pages too, and the last error is process-wide
    and only set on failure, so it would describe some earlier document."""
    raw = lib.raw
    handle = raw.FPDF_LoadMemDocument64(data, len(data), None)
    if not handle:
        raise explain_load_error(raw.FPDF_GetLastError())
    if raw.FPDF_GetPageCount(handle) < 1:
        raw.FPDF_CloseDocument(handle)
        raise InvalidDocument("the PDF has no pages; upload a document with at least one page", reason="empty")
    return handle


def explain_load_error(code: int) -> InvalidDocument:
    """What PDFium's load error ``code`` means for the person who uploaded the file."""
    raw = pdfium().raw
    if code == raw.FPDF_ERR_PASSWORD:
        return InvalidDocument(
            "the PDF is encrypted (it needs a password to open); upload it without a password", reason="encrypted"
        )
    if code == raw.FPDF_ERR_SECURITY:
        return InvalidDocument(
            "the PDF is protected by an unsupported security handler; remove the protection and upload it again",
            reason="encrypted",
        )
    return InvalidDocument(
        "the PDF is damaged or not a PDF: PDFium could not read its structure (it may be "
        "truncated); export or repair it and upload it again",
        reason="damaged",
    )


def fit_scale(width: float, height: float, scale: float) -> float:
    """``scale``, or less when the page would be over :data:`MAX_RENDER_PIXELS` (a poster-sized page)."""
    area = max(width * height, 1.0)
    return min(scale, math.sqrt(MAX_RENDER_PIXELS / area))


def _page_text(page: Any) -> str:
    textpage = page.get_textpage()
    try:
        return normalise_text(textpage.get_text_range())
    finally:
        textpage.close()


def normalise_text(text: str) -> str:
    """PDFium's page text with plain ``\\n`` line breaks and without its NUL and marker characters;
    snippet offsets count characters of this text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.translate({0: None, 0x02: "-", 0xFFFE: None})
