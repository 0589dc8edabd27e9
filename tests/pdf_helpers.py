"""PDFs made inside the tests, without network: real documents (matplotlib's PDF backend, text
and a picture per page), a really encrypted one (RC4, written by hand), and broken ones."""

from __future__ import annotations

import hashlib
import io

#: (width, height) in inches; the second page is landscape, so each image's aspect ratio is its own.
PAGE_SIZES = [(6, 8), (8, 5), (6, 8)]
#: The text of the three pages of the test document; only page 2 is about basalt and Iceland.
PAGES = [
    "Quarterly report. Revenue grew by twelve percent in the third quarter.\n"
    "Operating costs fell after the new warehouse opened.\n"
    "The board approved a dividend of two cents per share.",
    "Field notes. Hexagonal basalt columns rise from the black sand beach in Iceland.\n"
    "The columns formed when thick lava cooled slowly and cracked.\n"
    "Puffins nest on the cliffs above the columns every summer.",
    "Recipe. Whisk three eggs with a cup of flour and a pinch of salt.\n"
    "Pour the batter into a hot buttered pan.\n"
    "Serve the pancakes warm with maple syrup.",
]


def make_pdf(pages: list[str | None], sizes: list[tuple[float, float]] | None = None, picture: bool = True) -> bytes:
    """A PDF with one page per entry: its text (None: no text at all) and, with ``picture``, an image."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    buffer = io.BytesIO()
    gradient = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    with PdfPages(buffer) as pdf:
        for index, text in enumerate(pages):
            figure = Figure(figsize=(sizes or PAGE_SIZES)[index % len(sizes or PAGE_SIZES)])
            if text is not None:
                figure.text(0.05, 0.95, text, fontsize=7, va="top")
            if picture:
                axes = figure.add_axes((0.25, 0.1, 0.5, 0.45))
                axes.imshow(gradient, cmap="viridis")
                axes.axis("off")
            pdf.savefig(figure)
    return buffer.getvalue()


# An encrypted PDF (standard security handler, revision 2, 40-bit RC4), per the PDF 1.7 spec,
# algorithms 3.2-3.4. Nothing installed writes encrypted PDFs, and a hand-made one lets the test
# check that PDFium opens it with the password: it is really encrypted, not merely broken.

_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
_FILE_ID = b"modelq-test-0001"


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray()
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def _padded(password: bytes) -> bytes:
    return (password + _PAD)[:32]


def encrypted_pdf(user_password: bytes = b"secret", owner_password: bytes = b"owner") -> bytes:
    """A one-page PDF that opens only with ``user_password`` (or the owner's)."""
    permissions = -4
    owner_entry = _rc4(hashlib.md5(_padded(owner_password)).digest()[:5], _padded(user_password))
    key = hashlib.md5(
        _padded(user_password) + owner_entry + permissions.to_bytes(4, "little", signed=True) + _FILE_ID
    ).digest()[:5]
    user_entry = _rc4(key, _PAD)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 300] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
        % (owner_entry.hex().encode(), user_entry.hex().encode(), permissions),
    ]
    return _assemble(objects, b"/Encrypt 4 0 R /ID [<%s> <%s>]" % (_FILE_ID.hex().encode(), _FILE_ID.hex().encode()))


def zero_page_pdf() -> bytes:
    """A well-formed PDF whose page tree is empty."""
    return _assemble([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])


def _assemble(objects: list[bytes], trailer_extra: bytes = b"") -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer_extra, xref)
    return bytes(out)


#: Starts like a PDF, is not one.
BROKEN_PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R\nthis file was cut off in the middle of a"
