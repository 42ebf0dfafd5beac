"""The ahead-of-time kernels (classifier/compiled.py): built, current, used, and equal to
numba's just-in-time ones."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifier import compiled
from classifier.capture import live_fast, reader_fast
from classifier.features.featurize import FeaturizeConfig
from classifier.features.featurize_fast import featurize_fast
from tests.shared_data import SHARED, needs_files

PCAPS = SHARED
CAPTURES = [PCAPS / "ndpi" / "443-firefox.pcap", PCAPS / "ndpi" / "quic_interop_V.pcapng"]
REPO = Path(__file__).resolve().parents[1]
needs_captures = needs_files("ndpi/443-firefox.pcap", "ndpi/quic_interop_V.pcapng")


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
        check=False,
    )


def test_the_build_is_there_current_and_used() -> None:
    assert compiled.aot_status() == "aot", (
        "classifier/_aot is missing or older than the sources: run `make kernels` "
        "(or `python -m classifier.compiled`)"
    )


@needs_captures
def test_featurizing_never_needs_numba() -> None:
    """Every kernel call on the featurize path (pcap, pcapng, windows, resegmentation,
    hellos) fits the build: numba is never imported, no kernel compiles."""
    code = f"""
import sys
from classifier import compiled
from classifier.features.featurize_fast import featurize_fast
from classifier.features.featurize import FeaturizeConfig
from classifier.flows import FlowConfig
for path in {[str(p) for p in CAPTURES]!r}:
    featurize_fast(path)
    featurize_fast(path, FeaturizeConfig(window=5.0))
    featurize_fast(path, FeaturizeConfig(flow=FlowConfig(resegment_mss=536, max_flows=64)))
late = [k.__name__ for k in compiled._REGISTRY if k._dispatcher is not None]
assert not late and "numba" not in sys.modules, late
print("ok")
"""
    done = _run(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@needs_captures
@pytest.mark.parametrize(
    "config", [FeaturizeConfig(), FeaturizeConfig(window=5.0)], ids=["flows", "windows"]
)
def test_jit_and_aot_tables_are_equal(config: FeaturizeConfig, tmp_path: Path) -> None:
    out = tmp_path / "jit.pkl"
    code = f"""
import pickle
from classifier import compiled
from classifier.features.featurize_fast import featurize_fast
from classifier.features.featurize import FeaturizeConfig
assert compiled.aot_status() == "jit"
tables = [featurize_fast(p, FeaturizeConfig(window={config.window!r}))
          for p in {[str(p) for p in CAPTURES]!r}]
pickle.dump(tables, open({str(out)!r}, "wb"))
"""
    done = _run(code, SHORTFLOW_KERNELS="jit")
    assert done.returncode == 0, done.stderr[-2000:]
    jit_tables = pickle.loads(out.read_bytes())
    for path, want in zip(CAPTURES, jit_tables, strict=True):
        got = featurize_fast(path, config)
        assert len(got) > 0
        pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_calls_that_do_not_fit_the_build_go_to_numba() -> None:
    kernel = live_fast.release_blocks
    specs = [tuple(s) for s in compiled._built()[1][kernel.export_name]]  # type: ignore[index]
    ring = np.ones(64, np.uint8)
    assert compiled._fits((ring, 16, 4, 0, 1), specs)
    assert not compiled._fits((ring.astype(np.int8), 16, 4, 0, 1), specs)  # dtype
    assert not compiled._fits((ring[::2], 16, 2, 0, 1), specs)  # not contiguous
    readonly = ring.copy()
    readonly.flags.writeable = False
    assert not compiled._fits((readonly, 16, 4, 0, 1), specs)  # written by the kernel
    assert not compiled._fits((ring, 16.5, 4, 0, 1), specs)  # a float for an int
    assert not compiled._fits((ring, 16, 4, 0), specs)  # too few
    # a strided ring still works (numba compiles that variant) and writes the same bytes
    wide = np.ones(128, np.uint8)
    kernel(wide[::2], 16, 4, 1, 2)
    kernel(ring, 16, 4, 1, 2)
    assert np.array_equal(wide[::2], ring) and ring.sum() < 64


def test_a_stale_build_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a source edit the stamp differs: calls must not reach the old build."""
    monkeypatch.setattr(compiled, "_CHECKED", False)
    monkeypatch.setattr(compiled, "_LOADED", None)
    monkeypatch.setattr(compiled, "source_stamp", lambda: "edited")
    assert compiled.aot_status() == "jit"


def test_built_kernels_release_the_gil() -> None:
    """A thread running built kernels lets another thread run Python code meanwhile (as
    numba's ``nogil=True`` does). With a long switch interval a thread that held the GIL
    through its kernel calls would keep it until all ten calls were done."""
    frame = bytes.fromhex(
        "ffffffffffff00000000000108004500002e00004000401100000a4d00010a4d0002d431003500190000"
    ) + bytes(18)
    record = np.array([1, 0, len(frame), len(frame)], "<u4").tobytes() + frame
    n = 200_000
    buf = np.frombuffer(bytes(24) + record * n, np.uint8).copy()
    ts, cols = np.empty(n), np.empty((16, n), np.int64)
    counts, notes = np.zeros(64, np.int64), np.zeros(4, np.int64)
    started = threading.Event()
    calls: list[int] = []

    def run() -> None:
        started.set()
        for _ in range(10):
            calls.append(
                reader_fast._walk_pcap(
                    buf, len(buf), 24, False, 1e6, 1, True, ts, cols, counts, notes
                )[0]
            )

    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        thread = threading.Thread(target=run)
        thread.start()
        started.wait()
        seen = len(calls)  # this thread got the GIL while the other was in a kernel
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert calls == [n] * 10 and seen < 10
