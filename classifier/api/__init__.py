"""HTTP API (FastAPI): classify captures and feature rows, show the model, the live state.

Public surface::

    from classifier.api import create_app, Settings, check_bind_safety

    app = create_app(Settings(model_dir="models/v1"))   # then: uvicorn.run(app)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["create_app", "Settings", "check_bind_safety"]

if TYPE_CHECKING:
    from classifier.api.app import create_app
    from classifier.api.auth import check_bind_safety
    from classifier.api.settings import Settings

_HOME = {
    "create_app": "classifier.api.app",
    "check_bind_safety": "classifier.api.auth",
    "Settings": "classifier.api.settings",
}


def __getattr__(name: str) -> Any:
    # Lazy: `shortflow featurize` registers the `serve` command through this package and
    # must not pay for importing FastAPI (~0.5 s) on every start.
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    raise AttributeError(name)
