"""Long fuzzing runs of the decoder harnesses in tests/fuzz/harness.py.

Two engines, same harnesses and seeds (tests/fuzz/corpus):

* ``atheris`` (coverage-guided, libFuzzer; ``pip install atheris``): one child process per
  harness, the classifier modules instrumented, a scratch copy of the seeds as the
  working corpus; crashes are written to ``--crashes`` (default /tmp/sf-fuzz-crashes);
* ``random`` (no extra package): seeds mutated with :func:`tests.fuzz.harness.mutate`
  from a seeded :class:`random.Random`, for a time budget per harness; a failing input is
  written to the crash folder as well.

``--hypothesis SCALE`` instead runs the pytest fuzz tests with ``SHORTFLOW_FUZZ_SCALE``
(the CI run is scale 1).

The compiled fast path (``fast_capture``: capture heads, ``fast_packets``: conversations
with edited frames; both compared with the reference featurizer) runs with numba's bounds
checks on (``NUMBA_BOUNDSCHECK=1``, compiled into a separate cache,
``$TMPDIR/sf-numba-boundscheck``, so the normal cache stays unchecked), so that an
out-of-bounds read or write in a compiled loop raises IndexError instead of reading
garbage or corrupting memory; ``--no-boundscheck`` runs the production build instead. The
first bounds-checked run compiles every kernel (a minute or two). The random engine
writes each input of these harnesses to ``<crashes>/<name>-last.bin`` before running it,
so a hard crash of the process leaves it behind.

Usage::

    python benchmarks/fuzz.py                       # atheris if installed, 60 s/harness
    python benchmarks/fuzz.py --engine random --seconds 300 --only dns tls
    python benchmarks/fuzz.py --only tshark_lines dns_query dnsmasq   # parsers, fast
    python benchmarks/fuzz.py --engine random --only tshark  # real tshark, ~3 files/s
    python benchmarks/fuzz.py --engine random --seconds 300 --only fast_capture fast_packets
    python benchmarks/fuzz.py --hypothesis 20

Exit status 1 when any harness found a failing input.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["HARNESSES", "run_random", "run_atheris", "main"]

#: harness name -> seed kinds it starts from
HARNESSES: dict[str, tuple[str, ...]] = {
    "capture": ("capture",),
    "decode": ("capture",),
    "tls": ("tls",),
    "quic": ("quic",),
    "quic_plain": ("quic_plain",),
    "dns": ("dns",),
    "names": ("tls", "quic"),
    "tshark_lines": ("tshark",),
    "tshark": ("capture",),
    "dns_query": ("dns_query", "dns"),
    "dnsmasq": (),
    "fast_capture": ("capture",),
    "fast_packets": (),
}
#: harnesses that run numba-compiled code (bounds-checked in long runs)
COMPILED = frozenset(("fast_capture", "fast_packets"))
_BOUNDSCHECK_CACHE = Path(tempfile.gettempdir()) / "sf-numba-boundscheck"
#: modules with numba kernels (not instrumented by atheris)
_NUMBA_MODULES = (
    "classifier.capture.reader_fast",
    "classifier.flows.table_fast",
    "classifier.features.groups_fast",
    "classifier.features.featurize_fast",
)


def _target(name: str) -> Callable[[bytes], object]:
    """The one-input function of a harness (imports the harness module lazily, so the
    atheris child can instrument the classifier modules first)."""
    from classifier.capture import KNOWN_LINKTYPES
    from tests.fuzz import harness as h

    linktypes = sorted(KNOWN_LINKTYPES) + [999]

    def capture(data: bytes) -> object:
        return h.check_capture(data, skip_bad=len(data) % 2 == 1)

    def decode(data: bytes) -> object:
        if not data:
            return None
        return h.check_decode(linktypes[data[0] % len(linktypes)], data[1:])

    def tls(data: bytes) -> object:
        h.check_tls(data)
        cuts = [b * 7 for b in data[-4:]] if len(data) > 8 else []
        return h.check_tls_segments(data, cuts, seq0=len(data) * 2654435761)

    def quic(data: bytes) -> object:
        return h.check_quic_datagrams([data])

    def quic_plain(data: bytes) -> object:
        return h.check_quic_plain(data, len(data) % 6, bytes(range(8)), len(data))

    def dns(data: bytes) -> object:
        return h.check_dns(data)

    def names(data: bytes) -> object:
        half = len(data) // 2
        h.check_name_extractor(
            [
                (1, 6, data, 1),
                (1, 6, data[half:], 1 + half),
                (-1, 17, data, 0),
                (1, 17, data[:half], 0),
            ]
        )
        return None

    def tshark_lines(data: bytes) -> object:  # decoded the way iter_tshark reads stdout
        return h.check_tshark_line(data.decode("utf-8", "replace"))

    def tshark(data: bytes) -> object:  # real tshark: ~3 files/s, tshark's start-up
        return h.check_capture(data, featurize=False, backend="tshark")

    sinks = h.dns_sinks()

    def dns_query(data: bytes) -> object:
        n = len(data)
        return h.check_dns_query(
            data, sinks[n % len(sinks)], h.SINK_CLIENTS[n % len(h.SINK_CLIENTS)], audit=n % 16 == 0
        )

    def dnsmasq(data: bytes) -> object:  # names split at 0xff (never in UTF-8 text)
        names = [chunk.decode("utf-8", "replace") for chunk in data.split(b"\xff")]
        h.check_policy_names(names)
        return h.check_dnsmasq_names(names)

    def fast_capture(data: bytes) -> object:  # compiled reader vs reference, heads
        n = len(data)
        return h.check_fast_capture(data, n % len(h.FAST_CONFIGS), n // 7 % len(h.FAST_CHUNKS))

    def fast_packets(data: bytes) -> object:  # valid framing, edited frames
        return h.check_fast_packets(*h.fast_packets_from_bytes(data))

    return {
        "capture": capture,
        "decode": decode,
        "tls": tls,
        "quic": quic,
        "quic_plain": quic_plain,
        "dns": dns,
        "names": names,
        "tshark_lines": tshark_lines,
        "tshark": tshark,
        "dns_query": dns_query,
        "dnsmasq": dnsmasq,
        "fast_capture": fast_capture,
        "fast_packets": fast_packets,
    }[name]


def _seeds(name: str) -> list[bytes]:
    from tests.fuzz.harness import seeds

    out = [s for kind in HARNESSES[name] for s in seeds(kind)]
    if name == "decode":  # the first byte picks the link type; frames from the captures
        out = [bytes([1]) + s[40 : 40 + 1514] for s in out if len(s) > 60]
    if name == "dnsmasq":  # name lists: the default sinkhole names, and a few odd ones
        from classifier.enforce.policy import DEFAULT_SINKHOLE_NAMES

        out = [
            b"\xff".join(n.encode() for n in DEFAULT_SINKHOLE_NAMES),
            "*.TikTok.com.\xffx_y.lab.test\xff{}.example".format("a" * 63).encode(),
            b"a.com\n.\xffq/r.com\xff#x\xffs p.com",
        ]
    if name == "fast_packets":  # scene, config/chunk byte, then 7-byte edits
        from tests.fuzz.harness import scenes

        rng = random.Random(7)
        out = [
            bytes([i, (i % 3) | (i % 2) << 4]) + rng.randbytes(7 * (i % 4))
            for i in range(len(scenes()))
        ]
    return out


def _save_crash(crashes: Path, name: str, data: bytes) -> Path:
    crashes.mkdir(parents=True, exist_ok=True)
    path = crashes / f"{name}-{abs(hash(data)) & 0xFFFFFFFF:08x}.bin"
    path.write_bytes(data)
    return path


def run_random(name: str, seconds: float, crashes: Path, seed: int = 1) -> tuple[int, int]:
    """Mutational fuzzing without coverage feedback; returns (inputs run, failures)."""
    from tests.fuzz.harness import mutate

    target = _target(name)
    pool = _seeds(name) or [b""]
    rng = random.Random(seed)
    runs = failures = 0
    last = crashes / f"{name}-last.bin" if name in COMPILED else None
    if last is not None:
        crashes.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        base = rng.choice(pool)
        if rng.random() < 0.1:  # splice two seeds
            other = rng.choice(pool)
            base = base[: rng.randrange(len(base) + 1)] + other[rng.randrange(len(other) + 1) :]
        ops = [
            (rng.randrange(8), rng.randrange(1 << 16), rng.randrange(1 << 16))
            for _ in range(rng.randrange(1, 9))
        ]
        data = mutate(base, ops)
        runs += 1
        if last is not None:  # a segfault kills the process: leave the input behind
            last.write_bytes(data)
        try:
            target(data)
        except Exception:
            failures += 1
            where = _save_crash(crashes, name, data)
            print(f"[{name}] FAILURE saved to {where}\n{traceback.format_exc()}", flush=True)
    if last is not None:
        last.unlink(missing_ok=True)
    return runs, failures


def _atheris_child(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    logging.disable(logging.WARNING)
    # numba compiles the Python bytecode of its kernels: atheris must leave the modules
    # holding them alone (the rest of the classifier package is instrumented)
    with atheris.instrument_imports(include=["classifier"], exclude=list(_NUMBA_MODULES)):
        target = _target(name)

    def one(data: bytes) -> None:
        target(data)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()


def run_atheris(name: str, seconds: float, crashes: Path) -> int:
    """One coverage-guided run in a child process; returns its exit status (0 = clean)."""
    crashes.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"sf-fuzz-{name}-") as tmp:
        corpus = Path(tmp)
        for i, s in enumerate(_seeds(name)):
            (corpus / f"seed-{i:03d}").write_bytes(s)
        argv = [
            sys.executable,
            __file__,
            "_atheris",
            name,
            f"-max_total_time={int(seconds)}",
            "-max_len=65536",
            "-timeout=20",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={crashes}/{name}-",
            "-print_final_stats=1",
            str(corpus),
        ]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        stats = [
            ln
            for ln in proc.stderr.splitlines()
            if ln.startswith(
                (
                    "stat::number_of_executed_units",
                    "stat::peak_rss_mb",
                    "Done",
                    "==",
                    "INFO: -max_total_time",
                )
            )
        ]
        print(
            f"[{name}] exit {proc.returncode}; corpus {len(list(corpus.iterdir()))} "
            f"inputs; " + "; ".join(stats[-4:]),
            flush=True,
        )
        if proc.returncode != 0:
            print(proc.stderr[-4000:], flush=True)
        return proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    parser.add_argument("--seconds", type=float, default=60.0, help="budget per harness")
    parser.add_argument("--only", nargs="+", choices=sorted(HARNESSES), default=None)
    parser.add_argument(
        "--crashes", type=Path, default=Path(tempfile.gettempdir()) / "sf-fuzz-crashes"
    )
    parser.add_argument(
        "--hypothesis",
        type=float,
        default=None,
        metavar="SCALE",
        help="run the pytest fuzz tests with this example scale instead",
    )
    parser.add_argument(
        "--no-boundscheck",
        dest="boundscheck",
        action="store_false",
        help="run the compiled fast path without numba bounds checks",
    )
    args = parser.parse_args(argv)
    names = args.only or sorted(HARNESSES)
    if (
        args.boundscheck
        and args.hypothesis is None
        and COMPILED & set(names)
        and os.environ.get("NUMBA_BOUNDSCHECK") != "1"
    ):
        # numba reads NUMBA_BOUNDSCHECK at import: run the whole thing again in a child
        env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(_BOUNDSCHECK_CACHE))
        print(f"numba bounds checks on (cache {_BOUNDSCHECK_CACHE})", flush=True)
        return subprocess.call(
            [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)], cwd=ROOT, env=env
        )
    if os.environ.get("NUMBA_BOUNDSCHECK") == "1":
        _assert_bounds_checked()
    logging.disable(logging.WARNING)  # readers warn about every damaged input
    if args.hypothesis is not None:
        env = dict(os.environ, SHORTFLOW_FUZZ_SCALE=str(args.hypothesis))
        return subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "tests/fuzz", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env=env,
        )
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if shutil.which(sys.executable) and _has_atheris() else "random"
    print(f"engine {engine}, {args.seconds:g} s per harness, crashes -> {args.crashes}")
    bad = 0
    for name in names:
        if engine == "atheris":
            bad += run_atheris(name, args.seconds, args.crashes) != 0
        else:
            started = time.monotonic()
            runs, failures = run_random(name, args.seconds, args.crashes)
            rate = runs / max(time.monotonic() - started, 1e-9)
            print(f"[{name}] {runs} inputs ({rate:.0f}/s), {failures} failures", flush=True)
            bad += failures > 0
    return 1 if bad else 0


def _assert_bounds_checked() -> None:
    """Fail loudly unless compiled code really checks bounds (a kernel helper reading one
    byte past a 1-byte array must raise IndexError)."""
    import numpy as np

    from classifier.capture import decode_fast

    try:
        decode_fast.u16(np.zeros(1, np.uint8), 0)  # reads index 1
    except IndexError:
        return
    raise SystemExit("NUMBA_BOUNDSCHECK=1 is set but compiled code does not check bounds")


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_atheris":
        _atheris_child(sys.argv[2], sys.argv[3:])
    sys.exit(main())
