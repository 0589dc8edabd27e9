"""Split a page's text into overlapping snippets whose character ranges slice the text exactly.

Pure Python and deterministic: the ranges a job returns are offsets into the page text it
extracted, so a client can highlight a snippet in that text (``text[start:end] == snippet``).
A snippet ends, by preference, at a paragraph break, then at the end of a sentence, then at a
line break, then between words, and only as a last resort in the middle of a word (a long URL);
it never starts or ends with whitespace.
"""

from __future__ import annotations

import re
from typing import Any

#: Places a snippet may end, best first. Each match ends right after the last character kept,
#: so the snippet never carries trailing whitespace.
_BREAKS = (
    re.compile(r"\S(?=[ \t]*\n[ \t]*\n)"),  # end of a paragraph
    re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*(?=\s)"),  # end of a sentence
    re.compile(r"\S(?=[ \t]*\n)"),  # end of a line
    re.compile(r"\S(?=\s)"),  # end of a word
)
#: Characters past a snippet's limit the break patterns may look at (blank lines, closing quotes).
_LOOKAHEAD = 32


def split_text(text: str, size: int = 800, overlap: int = 100) -> list[tuple[int, int]]:
    """Character ranges ``(start, end)`` of the snippets of ``text``.

    Args:
        text: one page's text.
        size: the longest snippet, in characters; snippets end at a natural break in their
            second half when there is one.
        overlap: about how many characters of the end of a snippet the next one repeats (it
            starts at a word boundary), so a phrase cut by a break is whole in one of them.

    Returns:
        Ranges in order, each non-empty, at most ``size`` long, without surrounding whitespace;
        together they cover every non-whitespace character of ``text``.

    Raises:
        ValueError: ``size`` below 1, or ``overlap`` not in ``[0, size)``.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    spans: list[tuple[int, int]] = []
    start = _skip_space(text, 0)
    while start < len(text):
        end = _cut(text, start, size)
        spans.append((start, end))
        if _skip_space(text, end) >= len(text):
            break
        start = _next_start(text, start, end, overlap)
    return spans


def page_snippets(text: str, page: int, size: int = 800, overlap: int = 100) -> list[dict[str, Any]]:
    """The snippets of one page: ``{"page", "start", "end", "text"}`` with ``text == page_text[start:end]``."""
    return [{"page": page, "start": s, "end": e, "text": text[s:e]} for s, e in split_text(text, size, overlap)]


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _cut(text: str, start: int, size: int) -> int:
    """Where the snippet starting at ``start`` ends: the best break in its second half."""
    limit = start + size
    if limit >= len(text):
        return len(text.rstrip())
    floor = start + max(1, size // 2)
    for pattern in _BREAKS:
        # a little past the limit, so the look-aheads see the whitespace that follows a break at it
        ends = [m.end() for m in pattern.finditer(text, floor - 1, limit + _LOOKAHEAD) if m.end() <= limit]
        if ends:
            return ends[-1]
    return limit  # no break at all: cut inside the word


def _next_start(text: str, start: int, end: int, overlap: int) -> int:
    """The start of the next snippet: ``overlap`` characters back from ``end``, moved to a word start."""
    i = end - overlap
    if i <= start:
        i = end
    while i < end and not text[i - 1].isspace():  # do not start inside a word
        i += 1
    return _skip_space(text, i)
