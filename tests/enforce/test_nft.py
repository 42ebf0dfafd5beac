"""NftTable against real nftables inside scratch network namespaces (both backends)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from classifier.enforce.nft import NftTable
from classifier.errors import EnforcementError
from tests.netns import requires_netns, run_in, scratch_netns

pytestmark = [pytest.mark.netns, requires_netns]

OTHER_TABLE = """
table inet other {
  set keep { type ipv4_addr; elements = { 10.77.9.9 } }
  chain passthru {
    type filter hook forward priority 0; policy accept;
    ip saddr @keep counter accept
  }
}
table ip natty {
  chain post { type nat hook postrouting priority srcnat; policy accept; }
}
"""


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("sf-nft") as name:
        yield name


@pytest.fixture(params=["lib", "cli"])
def table(request: pytest.FixtureRequest, ns: str) -> Iterator[NftTable]:
    t = NftTable(ns, backend=request.param)
    assert t.backend == request.param
    try:
        yield t
    finally:
        t.close()


def _ruleset(ns: str) -> dict[str, object]:
    return json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)  # type: ignore[no-any-return]


def _objects(ns: str, kind: str, table: str = "shortflow") -> dict[str, dict[str, object]]:
    items = _ruleset(ns)["nftables"]
    assert isinstance(items, list)
    return {
        i[kind]["name"]: i[kind]
        for i in items
        if kind in i and i[kind].get("table", i[kind].get("name")) == table
    }


def test_create_builds_sets_and_chains(table: NftTable, ns: str) -> None:
    table.create()
    sets = _objects(ns, "set")
    assert set(sets) == {"flows4", "flows6", "pairs4", "pairs6", "dns4", "dns6"}
    assert sets["flows4"]["type"] == ["ipv4_addr", "ipv4_addr", "inet_service", "inet_proto"]
    assert sets["flows6"]["type"] == ["ipv6_addr", "ipv6_addr", "inet_service", "inet_proto"]
    assert sets["pairs6"]["type"] == ["ipv6_addr", "ipv6_addr"]
    assert all(s["flags"] == ["timeout"] and s["family"] == "inet" for s in sets.values())
    chains = _objects(ns, "chain")
    fwd = chains["forward"]
    assert (fwd["hook"], fwd["prio"], fwd["policy"], fwd["type"]) == (
        "forward",
        -5,
        "accept",
        "filter",
    )
    assert "hook" not in chains["reset_or_drop"]
    text = run_in(ns, ["nft", "list", "table", "inet", "shortflow"]).stdout
    for needle in (
        "@flows4",
        "@flows6",
        "@pairs4",
        "@pairs6",
        "@dns4",
        "@dns6",
        "th sport",
        "th dport",
        "reject with tcp reset",
        "drop",
    ):
        assert needle in text, needle
    assert table.exists()
    table.block_flow("10.77.1.2", "10.77.2.2", 443, "tcp", 30)
    table.create()  # rebuilding is fine, leaves one table, and starts empty
    items = _ruleset(ns)["nftables"]
    assert isinstance(items, list)
    assert [i["table"]["name"] for i in items if "table" in i] == ["shortflow"]
    assert table.list_blocks() == []


def test_block_list_renew_unblock(table: NftTable) -> None:
    table.create()
    table.block_flow("10.77.1.2", "10.77.2.2", 443, "UDP", 30)
    table.block_flow("fd77::2", "fd77:1::2", 443, "tcp", 30)
    table.block_pair("10.77.1.2", "10.77.2.3", 20)
    blocks = {(b.kind, b.client, b.server, b.port, b.proto): b for b in table.list_blocks()}
    assert set(blocks) == {
        ("flow", "10.77.1.2", "10.77.2.2", 443, "udp"),
        ("flow", "fd77::2", "fd77:1::2", 443, "tcp"),
        ("pair", "10.77.1.2", "10.77.2.3", None, None),
    }
    b = blocks[("flow", "10.77.1.2", "10.77.2.2", 443, "udp")]
    assert b.timeout_s == 30 and b.expires_s is not None and 25 <= b.expires_s <= 30
    table.block_flow("10.77.1.2", "10.77.2.2", 443, "udp", 600)  # renew: longer timeout
    renewed = [x for x in table.list_blocks() if x.port == 443 and x.proto == "udp"]
    assert len(renewed) == 1 and renewed[0].timeout_s == 600
    assert table.unblock("10.77.1.2", "10.77.2.2", 443, "udp") is True
    assert table.unblock("10.77.1.2", "10.77.2.2", 443, "udp") is False
    assert table.unblock("10.77.1.2", "10.77.2.3") is True
    assert [(x.client, x.proto) for x in table.list_blocks()] == [("fd77::2", "tcp")]
    table.block_addresses(["10.77.2.9", "fd77::9"], 60)
    assert sorted(table.list_addresses()) == ["10.77.2.9", "fd77::9"]
    assert table.counters() == {"reset": 0, "drop": 0}


def test_entries_expire(table: NftTable) -> None:
    table.create()
    table.block_flow("10.77.1.2", "10.77.2.2", 8080, "tcp", 2)
    assert len(table.list_blocks()) == 1
    t0 = time.monotonic()
    while table.list_blocks() and time.monotonic() - t0 < 6:
        time.sleep(0.1)
    gone_after = time.monotonic() - t0
    assert table.list_blocks() == []
    assert 1.0 <= gone_after <= 3.5, gone_after


def test_other_tables_untouched_and_delete_leaves_nothing(table: NftTable, ns: str) -> None:
    run_in(ns, ["nft", "-f", "-"], input=OTHER_TABLE)
    before = run_in(ns, ["nft", "list", "ruleset"]).stdout

    def others() -> str:
        return "".join(
            run_in(ns, ["nft", "list", "table", fam, name]).stdout
            for fam, name in (("inet", "other"), ("ip", "natty"))
        )

    others_before = others()
    table.create()
    table.block_flow("10.77.1.2", "10.77.2.2", 443, "tcp", 30)
    table.block_pair("10.77.1.2", "10.77.2.3", 30)
    assert others() == others_before
    during = run_in(ns, ["nft", "list", "ruleset"]).stdout
    assert "shortflow" in during and during != before
    table.delete()
    assert others() == others_before
    after = run_in(ns, ["nft", "list", "ruleset"]).stdout
    assert after == before and "shortflow" not in after
    assert not table.exists()
    table.delete()  # again: nothing to do, no error


def test_bad_input_is_one_line_enforcement_error(table: NftTable) -> None:
    with pytest.raises(EnforcementError, match="does not exist .*create"):
        table.list_blocks()
    table.create()
    cases = [
        (lambda: table.block_flow("10.77.1.2", "not-an-ip", 443, "tcp", 5), "not an IP"),
        (lambda: table.block_flow("10.77.1.2", "fd77::1", 443, "tcp", 5), "address family"),
        (lambda: table.block_flow("10.77.1.2", "10.77.2.2", 0, "tcp", 5), "1..65535"),
        (lambda: table.block_flow("10.77.1.2", "10.77.2.2", 443, "icmp", 5), "tcp or udp"),
        (lambda: table.block_flow("10.77.1.2", "10.77.2.2", 443, "tcp", 0), "timeout"),
        (lambda: table.block_pair("10.77.1.2", "10.77.2.2", 10**9), "timeout"),
        (lambda: table.unblock("10.77.1.2", "10.77.2.2", 443), "both port and proto"),
    ]
    for call, pattern in cases:
        with pytest.raises(EnforcementError, match=pattern) as info:
            call()
        assert "\n" not in str(info.value)
    assert table.list_blocks() == []


@pytest.mark.parametrize("backend", ["lib", "cli"])
def test_missing_namespace(backend: str) -> None:
    with pytest.raises(EnforcementError) as info:
        t = NftTable("sf-no-such-ns-xyz", backend=backend)  # type: ignore[arg-type]
        t.create()
    assert "sf-no-such-ns-xyz" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(EnforcementError, match="not valid"):
        NftTable("../etc")


def test_update_latency(ns: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Per-update latency of both backends (printed; loose upper bounds only)."""
    figures: dict[str, float] = {}
    for backend in ("lib", "cli"):
        t = NftTable(ns, backend=backend)  # type: ignore[arg-type]
        t.create()
        n = 200 if backend == "lib" else 30
        t0 = time.perf_counter()
        for i in range(n):
            t.block_flow("10.77.1.2", "10.77.2.2", 1000 + i, "udp", 60)
        figures[backend] = (time.perf_counter() - t0) / n * 1000
        assert len(t.list_blocks()) == n
        t.delete()
        t.close()
    with capsys.disabled():
        print(
            f"\nnft per-update latency: libnftables {figures['lib']:.3f} ms, "
            f"nft -j -f - {figures['cli']:.2f} ms"
        )
    assert figures["lib"] < 20 and figures["cli"] < 500
