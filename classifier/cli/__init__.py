"""The `shortflow` command: :mod:`classifier.cli.app` builds the parser and dispatches.

The sub-command groups live in their own modules (here: :mod:`~classifier.cli.live`,
:mod:`~classifier.cli.control`, :mod:`~classifier.cli.recordings`; elsewhere:
:mod:`classifier.model.cli`, :mod:`classifier.api.cli`, :mod:`training.cli`, ...) and take
their shared options from :mod:`classifier.cli.options`.
"""

from __future__ import annotations

from classifier.cli.app import main

__all__ = ["main"]
