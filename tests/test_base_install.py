"""A plain `pip install .` (no extras) must classify with the shipped model.

The test runs `shortflow classify` on the bundled sample in a process where every module
that only the optional extras (train, pyshark, bench, test) install cannot be imported: a
model or code path that needs one of them fails here as it would on such an install.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "datasets" / "samples" / "sample.pcap"


def _requirement_names(specs: list[str]) -> set[str]:
    return {
        re.split(r"[<>=!\[;~ ]", s, maxsplit=1)[0].strip().lower().replace("_", "-") for s in specs
    }


def _extra_only_modules() -> list[str]:
    """Top-level modules of the distributions the extras name and the base does not
    (their own dependencies that the base also pulls in stay importable)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = _requirement_names(project["dependencies"])
    extras = set().union(
        *(_requirement_names(v) for v in project["optional-dependencies"].values())
    )
    blocked = set()
    for module, dists in metadata.packages_distributions().items():
        names = {d.lower().replace("_", "-") for d in dists}
        if names & (extras - base) and not names & base:
            blocked.add(module)
    return sorted(blocked)


BLOCKER = """
import sys
from importlib.abc import MetaPathFinder

class NoExtras(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (an extra)", name=name)
        return None

sys.meta_path.insert(0, NoExtras())
from classifier.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_extras_are_known_modules() -> None:
    blocked = _extra_only_modules()
    assert {"matplotlib", "pyshark", "pytest"} <= set(blocked)
    assert not {"numpy", "sklearn", "pandas", "lightgbm"} & set(blocked)


def test_classify_runs_without_any_extra(tmp_path: Path) -> None:
    code = f"BLOCKED = {set(_extra_only_modules())!r}\n" + BLOCKER
    run = subprocess.run(
        [sys.executable, "-c", code, "classify", str(SAMPLE)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "short-form is" in run.stdout
