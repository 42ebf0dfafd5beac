"""Benchmark the HTTP API on 127.0.0.1: requests/s and p50/p99 latency of
``POST /v1/flows:classify`` (batches of 1 and 1000 rows) and MB/s of capture uploads.

    python benchmarks/api.py                       # own server, synthetic model
    python benchmarks/api.py --model classifier/model/default
    python benchmarks/api.py --url http://127.0.0.1:8080   # a running `shortflow serve`
    python benchmarks/api.py --model classifier/model/default --bulk BIG.pcap --only bulk

Every phase stops after ``--requests`` requests or ``--seconds`` seconds, whichever comes
first. Only loopback URLs are accepted. Figures depend on the machine and on the model;
the rows and the capture come from ``--capture`` (a real public capture by default).
Each phase also prints the benchmark process's CPU time per request (server and client
together when the server is the benchmark's own), steadier than wall time on a busy box.

``--bulk PATH`` adds a phase that uploads one big capture (``benchmarks/gen_captures.py
bulk-tls``) to ``captures:classify`` as a raw body (``--bulk-requests`` times) and then
times ``shortflow classify --json PATH`` of the same file (a fresh process, as a user runs
it) as the baseline: MB/s of both and their ratio. Uploads are sent in 1 MiB pieces with a
Content-Length: httpx given one ``bytes`` body sends it with ``buffer = buffer[n:]`` after
every ``send``, copying the rest of the body each time (quadratic: a 362 MB upload cost the
client ~20 s of CPU), which no real client does; the 3.4 MB body of 1000 rows goes the
same way.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifier.api.auth import is_loopback  # noqa: E402
from training.shared_captures import shared_captures_dir  # noqa: E402

DEFAULT_CAPTURE = shared_captures_dir() / "nfstream" / "instagram.pcap"


def _synthetic_model(directory: Path) -> Path:
    """A small real pipeline fitted on synthetic rows (numbers only mean 'some model')."""
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from classifier.features.schema import FEATURE_COLUMNS
    from classifier.model.artifact import LABELS, save_model

    rng = np.random.default_rng(1)
    x = pd.DataFrame(
        rng.gamma(2.0, 1.0, size=(600, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS)
    )
    y = np.array(LABELS, dtype=object)[rng.integers(0, len(LABELS), 600)]
    x["service"] = rng.choice(["youtube", "instagram", "unknown"], 600)
    pre = ColumnTransformer(
        [
            ("num", "passthrough", list(FEATURE_COLUMNS)),
            ("svc", OneHotEncoder(handle_unknown="ignore"), ["service"]),
        ]
    )
    pipe = Pipeline(
        [
            ("pre", pre),
            ("clf", RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0, n_jobs=1)),
        ]
    )
    pipe.fit(x, y)
    save_model(
        pipe, directory, name="benchmark-synthetic", labels=list(LABELS), decision_windows=[None]
    )
    return directory


class _Server:
    """The app under uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, model_dir: Path, max_upload_bytes: int = 0) -> None:
        import uvicorn

        from classifier.api import Settings, create_app

        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it every keep-alive response waits ~40 ms for a delayed ACK
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        settings = Settings(model_dir=model_dir)
        if max_upload_bytes > settings.max_upload_bytes:
            settings = Settings(model_dir=model_dir, max_upload_bytes=max_upload_bytes)
        app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit("benchmark server did not start")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


def _run(
    name: str,
    send: Callable[[], httpx.Response],
    requests: int,
    seconds: float,
    payload_bytes: int = 0,
    warmup: int = 2,
) -> dict[str, float]:
    for _ in range(warmup):
        send().raise_for_status()
    latencies: list[float] = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    while len(latencies) < requests and time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        r = send()
        latencies.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise SystemExit(f"{name}: HTTP {r.status_code}: {r.text[:300]}")
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    out = {
        "requests": len(latencies),
        "seconds": wall,
        "rps": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": p99 * 1e3,
        "cpu_ms": cpu / len(latencies) * 1e3,
    }
    line = (
        f"{name:<34} {out['requests']:>5} req in {wall:6.2f} s  {out['rps']:8.1f} req/s  "
        f"p50 {out['p50_ms']:8.1f} ms  p99 {out['p99_ms']:8.1f} ms  "
        f"cpu {out['cpu_ms']:8.1f} ms/req"
    )
    if payload_bytes:
        out["mb_per_s"] = payload_bytes * len(latencies) / wall / 1e6
        line += f"  {out['mb_per_s']:7.1f} MB/s"
    print(line, flush=True)
    return out


def _pieces(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    """``data`` in pieces of ``size`` bytes (see the module docstring: why not whole)."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _cli_classify(path: Path, model: Path | None, runs: int) -> dict[str, float]:
    """``shortflow classify --json PATH`` of this checkout, ``runs`` times: the baseline
    of the bulk upload (process start and model load included, as a user runs it)."""
    cmd = [sys.executable, "-m", "classifier.cli", "classify", "--json", str(path)]
    if model is not None:
        cmd[4:4] = ["--model", str(model.resolve())]
    times: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"shortflow classify failed: {done.stderr.strip()[-500:]}")
    size = path.stat().st_size
    out = {"runs": runs, "p50_s": statistics.median(times), "min_s": min(times)}
    out["mb_per_s"] = size / out["p50_s"] / 1e6
    print(
        f"{'shortflow classify --json (CLI)':<34} {runs:>5} runs  p50 {out['p50_s']:6.2f} s  "
        f"min {out['min_s']:6.2f} s  {out['mb_per_s']:7.1f} MB/s",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="benchmark a running server (loopback only) instead")
    p.add_argument(
        "--model", type=Path, help="model directory for the own server (default: a synthetic model)"
    )
    p.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE)
    p.add_argument("--requests", type=int, default=300, help="max requests per phase")
    p.add_argument("--seconds", type=float, default=15.0, help="max seconds per phase")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    p.add_argument(
        "--bulk",
        type=Path,
        help="also upload this big capture to captures:classify and time `shortflow "
        "classify --json` of it (e.g. /tmp/sf-bench/bulk-tls-256.pcap)",
    )
    p.add_argument("--bulk-requests", type=int, default=3, help="uploads (and CLI runs) of --bulk")
    p.add_argument(
        "--only",
        choices=("rows", "uploads", "bulk"),
        action="append",
        help="run only these phases (repeatable; default: all)",
    )
    args = p.parse_args(argv)
    phases = set(args.only or ("rows", "uploads", "bulk"))
    if args.bulk is None:
        phases.discard("bulk")

    from classifier.features.featurize import featurize
    from classifier.model.predict import model_inputs

    rows = json.loads(model_inputs(featurize(args.capture)).to_json(orient="records"))
    if not rows:
        raise SystemExit(f"{args.capture}: no flows to build rows from")
    batch = (rows * (1000 // len(rows) + 1))[:1000]
    capture = args.capture.read_bytes()

    def bench(url: str) -> dict[str, dict[str, float]]:
        results: dict[str, dict[str, float]] = {}
        with httpx.Client(base_url=url, timeout=120) as c:
            print(
                f"server {url}, model {c.get('/v1/model').json().get('name')}, "
                f"capture {args.capture.name} ({len(capture) / 1e6:.2f} MB, "
                f"{len(rows)} flows)"
            )
            # bodies encoded once: the figures are the server's, not the client's JSON
            json_type = {"content-type": "application/json"}
            one = json.dumps({"rows": rows[:1]}).encode()
            many = json.dumps({"rows": batch}).encode()
            raw_type = {
                "content-type": "application/octet-stream",
                "content-length": str(len(capture)),
            }
            if "rows" in phases:
                results.update(_rows_phases(c, one, many, json_type))
            if "uploads" in phases:
                results["upload_raw"] = _run(
                    "captures:classify, raw body",
                    lambda: c.post(
                        "/v1/captures:classify", content=_pieces(capture), headers=raw_type
                    ),
                    max(1, args.requests // 10),
                    args.seconds,
                    payload_bytes=len(capture),
                )
                results["upload_multipart"] = _run(
                    "captures:classify, multipart",
                    lambda: c.post(
                        "/v1/captures:classify",
                        files={"file": (args.capture.name, io.BytesIO(capture))},
                    ),
                    max(1, args.requests // 10),
                    args.seconds,
                    payload_bytes=len(capture),
                )
            if "bulk" in phases:
                results["upload_bulk"] = _bulk(c)
        return results

    def _rows_phases(
        c: httpx.Client, one: bytes, many: bytes, json_type: dict[str, str]
    ) -> dict[str, dict[str, float]]:
        return {
            "rows_1": _run(
                "flows:classify, 1 row",
                lambda: c.post("/v1/flows:classify", content=one, headers=json_type),
                args.requests,
                args.seconds,
            ),
            "rows_1000": _run(
                "flows:classify, 1000 rows",
                lambda: c.post(
                    "/v1/flows:classify",
                    content=_pieces(many),
                    headers={**json_type, "content-length": str(len(many))},
                ),
                max(1, args.requests // 10),
                args.seconds,
            ),
        }

    def _bulk(c: httpx.Client) -> dict[str, float]:
        assert args.bulk is not None
        size = args.bulk.stat().st_size
        bulk = args.bulk.read_bytes()
        headers = {"content-type": "application/octet-stream", "content-length": str(size)}
        print(f"bulk capture {args.bulk} ({size / 1e6:.1f} MB)", flush=True)
        inside: list[float] = []  # the answers' stats.seconds: reading, featurizing, verdicts

        def send() -> httpx.Response:
            r = c.post("/v1/captures:classify", content=_pieces(bulk), headers=headers)
            if r.status_code == 200:
                inside.append(float(r.json()["stats"]["seconds"]))
            return r

        out = _run(
            "captures:classify, bulk raw body",
            send,
            args.bulk_requests,
            1e9,
            payload_bytes=size,
            warmup=1,
        )
        out["classify_s"] = statistics.median(inside[1:])  # without the warm-up
        api = size / (out["p50_ms"] / 1e3) / 1e6
        print(
            f"{'  of which classifying (stats)':<34} p50 {out['classify_s']:6.2f} s; upload, "
            f"spooling and answer {out['p50_ms'] / 1e3 - out['classify_s']:.2f} s",
            flush=True,
        )
        cli = _cli_classify(args.bulk, args.model, args.bulk_requests)
        out["cli_mb_per_s"] = cli["mb_per_s"]
        out["api_over_cli"] = api / cli["mb_per_s"]
        print(
            f"{'bulk: API p50 / CLI p50':<34} {out['api_over_cli']:.2f}x "
            f"(API {api:.1f} MB/s at its p50)",
            flush=True,
        )
        return out

    if args.url:
        host = urlsplit(args.url).hostname
        if not is_loopback(host):
            raise SystemExit(f"refusing to benchmark {args.url}: loopback addresses only")
        results = bench(args.url)
    else:
        limit = args.bulk.stat().st_size + (1 << 20) if args.bulk is not None else 0
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = args.model or _synthetic_model(Path(tmp))
            with _Server(model_dir, max_upload_bytes=limit) as url:
                results = bench(url)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
