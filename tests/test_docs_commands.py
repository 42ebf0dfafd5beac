"""Every ``shortflow`` command in README.md, CONTRIBUTING.md and docs/*.md parses with the
real CLI parser, and every ``make`` target they name exists in the Makefile.

Fenced blocks: shell (```sh, ```bash, ```shell, ```console and ``` without a language:
every line; in ```console only ``$ `` lines) and the systemd unit's ```ini block
(``ExecStart=``/``ExecReload=`` lines). Backslash-continued lines are joined, comments and
redirections dropped, and a line is split at ``|``, ``&&``, ``||``, ``;`` and ``&`` into
commands checked one by one. Usage notation in docs (``[--model DIR]``, ``[--json|--csv]``,
a trailing ``...``) is read as real commands, each alternative checked. Output shown in a
fence is marked ```text so it is not read as commands.

Inline code spans that start with ``shortflow ...`` are checked too, but only for names:
an unknown command, an unknown option or a bad choice fails; a missing argument or a
placeholder value does not (prose often names a command without its arguments).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from classifier.cli.app import build_parser
from classifier.enforce.policy import enforcement_status
from tests.netns import requires_netns, run_in, scratch_netns

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"", "sh", "bash", "shell", "console"}
UNIT_KEYS = ("ExecStart", "ExecReload", "ExecStartPre", "ExecStartPost")
_SEPARATORS = {"|", "||", "&&", ";", "&"}
_REDIRECT = re.compile(r"^(\d*|&)(>>?|<|>&)(.*)$")
_PLACEHOLDER = re.compile(r"^<[^<>]+>$")  # <capture.pcap> in docs is a value
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_WRAPPERS = {"sudo", "exec", "time", "nice", "env"}
_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
_INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


@dataclass(frozen=True)
class DocLine:
    """One logical line of a doc: a fenced line (continuations joined) or a code span."""

    path: str  # relative to the repository root
    line: int  # 1-based line of its start
    text: str
    kind: str  # "shell", "unit" or "inline"

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", root / "CONTRIBUTING.md", *sorted((root / "docs").glob("*.md"))]


def _join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    start, parts = 0, list[str]()
    for number, text in lines:
        if not parts:
            start = number
        stripped = text.rstrip()
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        out.append((start, " ".join(p.strip() for p in parts)))
        parts = []
    if parts:
        out.append((start, " ".join(p.strip() for p in parts)))
    return out


def extract(text: str, path: str) -> list[DocLine]:
    """The shell and unit lines of fenced blocks, and the inline code spans, of a doc."""
    found: list[DocLine] = []
    fence: str | None = None
    lang = ""
    block: list[tuple[int, str]] = []
    prose: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, lang, block = match.group(1), match.group(2).lower(), []
            else:
                prose.append((number, line))
            continue
        if match and line.strip().startswith(fence) and not match.group(2):
            found.extend(_block_lines(block, lang, path))
            fence = None
            continue
        block.append((number, line))
    found.extend(_inline_spans(prose, path))
    return sorted(found, key=lambda d: d.line)


def _block_lines(block: list[tuple[int, str]], lang: str, path: str) -> list[DocLine]:
    out = []
    if lang in SHELL_LANGS:
        for number, text in _join_continuations(block):
            stripped = text.strip()
            if lang == "console":
                if not stripped.startswith("$ "):
                    continue
            if stripped.startswith("$ "):
                stripped = stripped[2:]
            if stripped:
                out.append(DocLine(path, number, stripped, "shell"))
    elif lang in ("ini", "systemd"):
        for number, text in _join_continuations(block):
            key, sep, value = text.strip().partition("=")
            if sep and key.strip() in UNIT_KEYS:
                # systemd's prefixes: - (ignore failure), @, +, !, !!, :
                out.append(DocLine(path, number, value.strip().lstrip("-@+!:"), "unit"))
    return out


def _inline_spans(prose: list[tuple[int, str]], path: str) -> list[DocLine]:
    """Code spans of the prose (they may run across a line break)."""
    out = []
    numbers = [n for n, _ in prose]
    joined = "\n".join(t for _, t in prose)
    for match in _INLINE.finditer(joined):
        line = numbers[joined.count("\n", 0, match.start())]
        out.append(DocLine(path, line, " ".join(match.group(1).split()), "inline"))
    return out


def all_doc_lines(root: Path = ROOT) -> list[DocLine]:
    lines = []
    for doc in doc_files(root):
        lines.extend(extract(doc.read_text(encoding="utf-8"), str(doc.relative_to(root))))
    return lines


# -- commands ---------------------------------------------------------------------------


def segments(text: str) -> list[list[str]]:
    """The simple commands of a shell line: comments dropped, split at ``|``, ``&&``,
    ``||``, ``;``, ``&``, redirections (and their targets) removed."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote: not a shell line
        return []
    out: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if token in _SEPARATORS:
            out.append([])
            continue
        redirect = None if _PLACEHOLDER.match(token) else _REDIRECT.match(token)
        if redirect:
            skip_next = not redirect.group(3)  # "> file": the target is the next token
            continue
        out[-1].append(token)
    return [s for s in out if s]


def shortflow_args(tokens: list[str]) -> list[str] | None:
    """The arguments after the program name when ``tokens`` run shortflow (``shortflow``,
    ``.venv/bin/shortflow``, ``/opt/shortflow/.venv/bin/shortflow``, ``python -m
    classifier.cli``), else None."""
    i = 0
    while i < len(tokens) and (_ENV.match(tokens[i]) or tokens[i] in _WRAPPERS):
        i += 1
    if i >= len(tokens):
        return None
    program = tokens[i]
    if program.rsplit("/", 1)[-1] == "shortflow":
        return tokens[i + 1 :]
    if re.fullmatch(r"(.*/)?python3?(\.\d+)?", program) and tokens[i + 1 : i + 3] in (
        ["-m", "classifier"],
        ["-m", "classifier.cli"],
    ):
        return tokens[i + 3 :]
    return None


def make_targets_named(tokens: list[str]) -> list[str] | None:
    """The targets of a ``make ...`` command (none: the default target), else None."""
    if not tokens or tokens[0] != "make":
        return None
    targets = []
    skip_next = False
    for token in tokens[1:]:
        if skip_next:
            skip_next = False
        elif token in ("-C", "-f", "-j") or token.startswith("-") or _ENV.match(token):
            skip_next = token in ("-C", "-f")
        else:
            targets.append(token)
    return targets


def usage_variants(args: list[str]) -> list[list[str]]:
    """Read usage notation as real commands: ``[--opt X]`` -> ``--opt X``,
    ``--json|--csv`` -> one variant per alternative, and a lone ``...`` is dropped."""
    plain: list[list[str]] = []
    in_group = False
    for token in args:
        if token in ("...", "\u2026"):  # "and the rest"
            continue
        if token.startswith("[-"):
            in_group = True
            token = token[1:]
        if in_group and token.endswith("]"):
            in_group = False
            token = token[:-1]
        parts = token.split("|")
        plain.append(parts if len(parts) > 1 and all(p.startswith("-") for p in parts) else [token])
    return [list(v) for v in itertools.product(*plain)][:16]


@functools.cache
def parser() -> argparse.ArgumentParser:
    return build_parser()


def parse_error(args: list[str]) -> str | None:
    """None when the real parser takes ``args``, else its message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser().parse_args(args)
    except SystemExit as exc:
        if exc.code not in (0, None):  # --help exits 0
            lines = err.getvalue().strip().splitlines()
            return lines[-1] if lines else f"exit {exc.code}"
    return None


def command_error(args: list[str], *, names_only: bool = False) -> str | None:
    """The parser's complaint about a doc command (any usage variant), or None.

    ``names_only``: only unknown commands/options and bad choices count (code spans name
    commands without their arguments, or with placeholders like ``--jobs N``)."""
    for variant in usage_variants(args):
        error = parse_error(variant)
        if error is None:
            continue
        if names_only and not ("unrecognized arguments" in error or "invalid choice" in error):
            continue
        return f"{' '.join(variant)!r}: {error}"
    return None


@dataclass(frozen=True)
class DocCommand:
    doc: DocLine
    args: tuple[str, ...]


def doc_commands(lines: list[DocLine]) -> list[DocCommand]:
    out = []
    for doc in lines:
        for tokens in segments(doc.text):
            args = shortflow_args(tokens)
            if args is not None and (doc.kind != "inline" or tokens[0] != "shortflow" or args):
                out.append(DocCommand(doc, tuple(args)))
    return out


def makefile_targets(path: Path = ROOT / "Makefile") -> set[str]:
    targets: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([^\s#$:=][^:=]*?)\s*::?(?!=)", line)
        if match:
            targets.update(match.group(1).split())
    return targets - {".PHONY"}


DOC_LINES = all_doc_lines()
COMMANDS = doc_commands(DOC_LINES)
BLOCK_COMMANDS = [c for c in COMMANDS if c.doc.kind != "inline"]
INLINE_COMMANDS = [c for c in COMMANDS if c.doc.kind == "inline"]
MAKE_USES = [
    (doc, targets)
    for doc in DOC_LINES
    for tokens in segments(doc.text)
    if (targets := make_targets_named(tokens)) is not None
]


# -- the docs ---------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", BLOCK_COMMANDS, ids=[c.doc.where for c in BLOCK_COMMANDS])
def test_documented_command_parses(cmd: DocCommand) -> None:
    error = command_error(list(cmd.args))
    assert error is None, f"{cmd.doc.where}: {cmd.doc.text}\n  {error}"


@pytest.mark.parametrize("cmd", INLINE_COMMANDS, ids=[c.doc.where for c in INLINE_COMMANDS])
def test_command_named_in_prose_exists(cmd: DocCommand) -> None:
    error = command_error(list(cmd.args), names_only=True)
    assert error is None, f"{cmd.doc.where}: `{cmd.doc.text}`\n  {error}"


@pytest.mark.parametrize(("doc", "targets"), MAKE_USES, ids=[d.where for d, _ in MAKE_USES])
def test_make_target_exists(doc: DocLine, targets: list[str]) -> None:
    missing = sorted(set(targets) - makefile_targets())
    assert not missing, f"{doc.where}: {doc.text}\n  no such Makefile target: {missing}"


def test_the_docs_have_commands_to_check() -> None:
    where = {c.doc.path for c in BLOCK_COMMANDS}
    assert {"README.md", "docs/deployment.md"} <= where
    assert len(BLOCK_COMMANDS) >= 20
    assert {"demo", "test", "kernels", "model"} <= {t for _, ts in MAKE_USES for t in ts}


def test_the_systemd_unit_runs_live_mode_and_reloads() -> None:
    unit = [d for d in DOC_LINES if d.path == "docs/deployment.md" and d.kind == "unit"]
    starts = [d for d in unit if "shortflow" in d.text and " live " in f" {d.text} "]
    assert len(starts) >= 1, "no ExecStart running shortflow live in docs/deployment.md"
    for start in starts:
        args = shortflow_args(shlex.split(start.text))
        assert args is not None and args[0] == "live"
        assert command_error(args) is None, start.where
        # enforcement is said on the command line, not left to the default
        assert "--enforce" in args, f"{start.where}: ExecStart has no --enforce"
        assert "--policy" in args and "--audit-log" in args
    assert any(d.text == "/bin/kill -HUP $MAINPID" for d in unit), "no ExecReload"
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert "more cautious" in text and "--enforce nft" in text and 'mode = "nft"' in text


_ENFORCEMENT_PROBE = """
import json, sys, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
deadline = time.monotonic() + 60
while True:
    try:
        with opener.open(f"http://{sys.argv[1]}/v1/live/flows", timeout=5) as r:
            print(json.dumps(json.load(r)["enforcement"]))
            break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
"""


def _enforcement(ns: str, hostport: str) -> object:
    """``enforcement`` of ``GET /v1/live/flows`` from inside ``ns`` (loopback, no token)."""
    out = run_in(ns, [sys.executable, "-c", _ENFORCEMENT_PROBE, hostport], timeout=90).stdout
    return json.loads(out)


def _swap(args: list[str], option: str, value: str) -> None:
    args[args.index(option) + 1] = value


@pytest.mark.slow
@requires_netns
def test_the_systemd_unit_command_starts_blocks_and_reloads(tmp_path: Path) -> None:
    """The unit's ExecStart as it is (``--enforce nft``), in a scratch network namespace
    on its lo, with the doc's first policy (dry-run) and its files in tmp_path: it starts,
    says that --enforce and the policy disagree, installs its nftables table there, and
    after the policy says nft and SIGHUP it blocks (effective nft); SIGTERM stops it and
    removes the table."""
    start = next(
        d
        for d in DOC_LINES
        if d.path == "docs/deployment.md" and d.kind == "unit" and " live " in d.text
    )
    args = shortflow_args(shlex.split(start.text))
    assert args is not None and args[args.index("--enforce") + 1] == "nft"
    policy = tmp_path / "policy.toml"
    policy.write_text('mode = "dry-run"\n')
    _swap(args, "--iface", "lo")
    _swap(args, "--policy", str(policy))
    _swap(args, "--audit-log", str(tmp_path / "audit.jsonl"))
    _swap(args, "--data-dir", str(tmp_path / "data"))  # recordings: not in the host's /var/lib
    api = args[args.index("--api") + 1] if "--api" in args else None
    program = Path(sys.executable).parent / "shortflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHORTFLOW_")}
    err = tmp_path / "stderr"
    with scratch_netns("sf-unit") as ns, err.open("wb") as sink:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, str(program), *args],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=env,
        )
        try:
            deadline = time.monotonic() + 240  # kernels may compile just in time
            while "shortflow: live on lo" not in err.read_text():
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.2)
            tables = run_in(ns, ["nft", "list", "tables"]).stdout
            assert "inet shortflow" in tables, tables
            if api is not None:
                assert _enforcement(ns, api) == {
                    "flag": "nft",
                    "policy": "dry-run",
                    "effective": "dry-run",
                    "note": enforcement_status("nft", "dry-run")["note"],
                }
            policy.write_text('mode = "nft"\n')
            proc.send_signal(signal.SIGHUP)
            if api is not None:
                deadline = time.monotonic() + 30
                while (got := _enforcement(ns, api))["effective"] != "nft":  # type: ignore[index]
                    assert time.monotonic() < deadline, got
                    time.sleep(0.3)
            assert proc.poll() is None, err.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, err.read_text()
            assert "inet shortflow" not in run_in(ns, ["nft", "list", "tables"]).stdout
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = err.read_text()
    notes = [line for line in text.splitlines() if "disagree" in line]
    assert notes == [f"shortflow: WARNING: {enforcement_status('nft', 'dry-run')['note']}"], text
    assert "enforcement dry-run" in text and "not reloaded" not in text, text
    assert (tmp_path / "audit.jsonl").exists()


# -- the checker itself -------------------------------------------------------------------


def test_checker_rejects_an_unknown_option() -> None:
    error = command_error(shortflow_args(shlex.split("shortflow live --interface wg0")) or [])
    assert error is not None and "unrecognized arguments: --interface wg0" in error
    assert command_error(["live", "--iface", "wg0"]) is None
    assert command_error(["liv", "--iface", "wg0"], names_only=True) is not None
    assert command_error(["live", "--enforce", "block"], names_only=True) is not None
    assert command_error(["classify"], names_only=True) is None  # a name in prose


def test_extract_reads_blocks_units_and_spans() -> None:
    text = "\n".join(
        [
            "Run `shortflow live --interface wg0` or `make demo`.",  # 1
            "```sh",
            "shortflow live --iface wg0 \\",  # 3
            "    --enforce nft --policy <policy.toml>   # comment",
            "cd x && .venv/bin/shortflow flows a.pcap --limit 3 2>&1 | head",  # 5
            "```",
            "```text",
            "shortflow fast    985737 records",  # output, not a command
            "```",
            "```console",
            "$ shortflow classify x.pcap > out.txt",  # 11
            "shortflow: printed output",
            "```",
            "```ini",
            "ExecStart=/opt/shortflow/.venv/bin/shortflow live --iface wg0 \\",  # 15
            "    --enforce dry-run",
            "ExecReload=/bin/kill -HUP $MAINPID",  # 17
            "ExecStopPost=-/usr/sbin/nft delete table inet shortflow",
            "```",
        ]
    )
    lines = extract(text, "x.md")
    cmds = [(c.doc.line, c.doc.kind, list(c.args)) for c in doc_commands(lines)]
    assert cmds == [
        (1, "inline", ["live", "--interface", "wg0"]),
        (3, "shell", ["live", "--iface", "wg0", "--enforce", "nft", "--policy", "<policy.toml>"]),
        (5, "shell", ["flows", "a.pcap", "--limit", "3"]),
        (11, "shell", ["classify", "x.pcap"]),
        (15, "unit", ["live", "--iface", "wg0", "--enforce", "dry-run"]),
    ]
    assert [d.text for d in lines if d.kind == "unit"][1] == "/bin/kill -HUP $MAINPID"
    uses = [t for d in lines for s in segments(d.text) if (t := make_targets_named(s)) is not None]
    assert uses == [["demo"]]


def test_usage_notation_gives_each_variant() -> None:
    args = shlex.split("classify CAPTURE [--model DIR] [--json|--csv] [--at 3]")
    assert usage_variants(args) == [
        ["classify", "CAPTURE", "--model", "DIR", "--json", "--at", "3"],
        ["classify", "CAPTURE", "--model", "DIR", "--csv", "--at", "3"],
    ]
    assert usage_variants(["live", "--dns-listen", "[::1]:53"]) == [
        ["live", "--dns-listen", "[::1]:53"]
    ]
    assert usage_variants(["-v", "live", "..."]) == [["-v", "live"]]


def test_makefile_targets_are_read() -> None:
    targets = makefile_targets()
    assert {"demo", "test", "kernels", "model", "lint", "venv"} <= targets
    assert not any("$" in t or "=" in t for t in targets)
