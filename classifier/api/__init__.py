"""HTTP API (FastAPI): classify captures and feature rows, show the model, the live state.

Public surface::

    from classifier.api import create_app, Settings, check_bind_safety

    app = create_app(Settings(model_dir="models/v1"))   # then: uvicorn.run(app)
"""

from __future__ import annotations

from classifier.api.app import create_app
from classifier.api.auth import check_bind_safety
from classifier.api.settings import Settings

__all__ = ["create_app", "Settings", "check_bind_safety"]
