"""The router's web pages (overview, live, blocks, policy, model, captures) on the API app.

:func:`install` adds them to a FastAPI app: ``shortflow serve`` and ``shortflow live --api``
both serve them at ``/``. See docs/web.md.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from classifier.web.pages import STATIC_DIR, router

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Add the pages and their static files (``/static``) to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="web-static")
