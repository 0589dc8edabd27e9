"""``enrich``: a PDF becomes snippets (text with page numbers and character ranges), page images
(PNG artifacts) and an embedding per snippet; ``POST /v1/documents`` runs it on upload.

Modules: :mod:`.pdf` (PDFium: checks, page text, page images), :mod:`.snippets` (splitting; pure
Python), :mod:`.search` (ranking snippets against a query vector), :mod:`.task` (the registered
task and :func:`submit_document`). Importing this package registers the task and nothing more:
pypdfium2, numpy and the model are loaded when a job runs.
"""

from __future__ import annotations

from modelq.workloads.enrich.snippets import page_snippets, split_text
from modelq.workloads.enrich.task import EMBEDDINGS, TASK, check_params, submit_document

__all__ = ["EMBEDDINGS", "TASK", "check_params", "page_snippets", "split_text", "submit_document"]
