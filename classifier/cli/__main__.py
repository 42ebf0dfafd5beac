"""`python -m classifier.cli ...`: the same as `shortflow ...`."""

from __future__ import annotations

import sys

from classifier.cli.app import main

sys.exit(main())
