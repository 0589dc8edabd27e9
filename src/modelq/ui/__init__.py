"""The web UI: a static single-page app (``static/``) that the API serves at ``/ui/``.

Plain HTML, CSS and JavaScript modules: no build step, nothing fetched from a CDN. The pages
talk to the same HTTP API as every other client and follow jobs with Server-Sent Events.
"""

from __future__ import annotations

from pathlib import Path

#: The folder the API serves at ``/ui/``.
STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = ["STATIC_DIR"]
