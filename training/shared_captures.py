"""Where the shared public captures are: the one place that decides.

The public captures used for development, tests, benchmarks and the shipped model are not
part of this repository. They are looked for, in this order:

1. ``$SHORTFLOW_TEST_DATA``, when set and not empty;
2. ``$SHORTFLOW_PCAPS``, the older name of the same setting (kept as an alias);
3. ``../shared/pcaps`` relative to the repository root (the folder beside the checkout).

Manifests (``datasets/*.csv``) list these captures as ``../../shared/pcaps/...``, the
default place; :func:`relocate` maps such a path into the folder chosen above.

``python -m training.shared_captures`` prints the folder and whether it is there
(``make`` uses it to tell where it looks).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["ENV_VARS", "DEFAULT_DIR", "shared_captures_dir", "relocate", "missing_reason"]

#: the environment variables read, first set wins
ENV_VARS = ("SHORTFLOW_TEST_DATA", "SHORTFLOW_PCAPS")

#: ``../shared/pcaps`` relative to the repository root
DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "pcaps"


def shared_captures_dir() -> Path:
    """The shared captures folder (see the module docstring); it may not exist."""
    for name in ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return Path(value).expanduser().absolute()
    return DEFAULT_DIR


def relocate(path: Path) -> Path:
    """``path`` under the default folder, moved to :func:`shared_captures_dir` when that is
    another folder; any other path unchanged."""
    chosen = shared_captures_dir()
    if chosen == DEFAULT_DIR:
        return path
    try:
        inside = Path(os.path.normpath(path.absolute())).relative_to(DEFAULT_DIR)
    except ValueError:
        return path
    return chosen / inside


def missing_reason(*parts: str) -> str | None:
    """None when the shared captures folder holds every one of ``parts`` (relative paths;
    none: the folder itself), else a one-line reason naming what is missing and how to
    provide it (for a test's skip or a benchmark's exit)."""
    root = shared_captures_dir()
    missing = [p for p in parts or ("",) if not (root / p).exists()]
    if not missing:
        return None
    what = "the folder" if missing == [""] else ", ".join(missing)
    return (
        f"shared public captures not found ({what} missing under {root}): put them at "
        "../shared/pcaps beside the repository or set SHORTFLOW_TEST_DATA"
    )


def main() -> int:
    root = shared_captures_dir()
    state = "present" if root.is_dir() else "absent: tests that need them are skipped"
    print(f"shared captures: {root} ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
