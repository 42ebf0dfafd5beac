"""The columns and session labels of a dataset manifest (``training/manifest.py`` reads and
writes manifests; the live recorder, ``classifier/live/recording.py``, writes one). Defined here
so that both use one definition without ``classifier`` importing ``training``."""

from __future__ import annotations

__all__ = ["MANIFEST_COLUMNS", "OPTIONAL_COLUMNS", "SESSION_LABELS"]

MANIFEST_COLUMNS = (
    "path",
    "sha256",
    "label",
    "app",
    "recorded",
    "device",
    "date",
    "license",
    "notes",
)
"""Columns every manifest has."""
OPTIONAL_COLUMNS = ("url",)
"""Columns a manifest may have; new manifests written by ``training.manifest.add_row`` have
them."""
SESSION_LABELS = ("short-form", "long-form", "other-video", "web", "call", "mixed", "other")
"""What a manifest row's ``label`` may be."""
