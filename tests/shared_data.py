"""The shared public captures, for the tests that read them.

Where they are is decided in one place, :mod:`training.shared_captures`
(``$SHORTFLOW_TEST_DATA``, its alias ``$SHORTFLOW_PCAPS``, else ``../shared/pcaps`` beside
the repository). A test that needs them is marked with the files it
reads (``@needs_files("ndpi/quic.pcap")``) or ``@needs_shared`` (the folder) and is
skipped, with the reason, when they are absent.
"""

from __future__ import annotations

import pytest

from training.shared_captures import DEFAULT_DIR, missing_reason, shared_captures_dir

__all__ = ["SHARED", "DEFAULT_DIR", "missing_reason", "needs_files", "needs_shared"]

SHARED = shared_captures_dir()


def needs_files(*parts: str) -> pytest.MarkDecorator:
    """Skip unless the shared captures folder holds every one of ``parts`` (paths relative
    to it; none: the folder itself)."""
    reason = missing_reason(*parts)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


#: skip unless the shared captures folder is there
needs_shared = needs_files()
