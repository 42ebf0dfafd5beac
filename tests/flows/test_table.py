from __future__ import annotations

import pytest

from classifier.flows import DOWN, UP, FlowConfig, FlowTable
from classifier.flows.key import orient
from tests.packets import ACK, CLIENT, FIN, RST, SERVER, SYN, handshake, tcp, udp


def _run(packets, config=None):
    table = FlowTable(config or FlowConfig())
    for p in packets:
        table.add(p)
    table.flush()
    return table, table.pop_ended()


def test_bidirectional_packets_form_one_flow_with_client_from_syn():
    pkts = handshake() + [tcp(0.05, True, 100), tcp(0.06, False, 1400), tcp(0.07, False, 1400)]
    _, flows = _run(pkts)
    assert len(flows) == 1
    f = flows[0]
    assert (f.key.client, f.key.client_port, f.key.server, f.key.server_port) == (
        CLIENT,
        50000,
        SERVER,
        443,
    )
    assert f.packets == 6
    assert list(f.direction) == [UP, DOWN, UP, UP, DOWN, DOWN]


def test_client_is_syn_sender_even_from_low_port():
    # a SYN from port 80 to 50000: the SYN decides, not the ports
    syn = tcp(0.0, False, 0, SYN)  # SERVER:443 -> CLIENT:50000 with SYN
    assert orient(syn).client == SERVER


def test_client_from_ephemeral_port_without_syn():
    mid = tcp(0.0, False, 1400)  # first packet seen is server -> client, no SYN
    key = orient(mid)
    assert key.client == CLIENT and key.server_port == 443


def test_client_is_first_sender_when_ports_say_nothing():
    p = udp(0.0, False, 100, cport=5000, sport=6000)  # server side sends first
    assert orient(p).client == SERVER


def test_idle_timeout_is_checked_for_all_flows_by_capture_time():
    cfg = FlowConfig(idle_timeout=5.0, sweep_interval=1.0)
    table = FlowTable(cfg)
    table.add(udp(0.0, True, 100, cport=40001))
    # traffic of ANOTHER flow advances capture time: the first flow must expire
    for i in range(10):
        table.add(udp(1.0 + i, True, 100, cport=40002))
    ended = table.pop_ended()
    assert [f.key.client_port for f in ended] == [40001]
    assert ended[0].end_reason == "idle"
    assert len(table) == 1


def test_active_timeout_splits_a_long_flow():
    cfg = FlowConfig(active_timeout=10.0, idle_timeout=100.0)
    _, flows = _run([udp(float(t), True, 100) for t in range(25)], cfg)
    assert [f.end_reason for f in flows] == ["active", "active", "end"]
    assert sum(f.packets for f in flows) == 25


def test_fin_close_keeps_trailing_ack_then_new_syn_starts_new_flow():
    pkts = handshake() + [
        tcp(0.1, False, 500),
        tcp(0.2, True, 0, FIN | ACK),
        tcp(0.21, False, 0, FIN | ACK),
        tcp(0.22, True, 0, ACK),
    ]
    pkts += handshake(5.0)
    table, flows = _run(pkts, FlowConfig(close_linger=1.0))
    assert [f.end_reason for f in flows] == ["fin", "end"]
    assert flows[0].packets == 7 and flows[1].packets == 3


def test_rst_ends_flow_after_linger():
    pkts = handshake() + [tcp(0.1, False, 0, RST)] + [udp(3.0 + i, True, 10) for i in range(3)]
    _, flows = _run(pkts, FlowConfig(close_linger=0.5))
    tcp_flow = [f for f in flows if f.key.proto == 6][0]
    assert tcp_flow.end_reason == "rst"


def test_flow_cap_evicts_least_recently_active_and_counts_it():
    table = FlowTable(FlowConfig(max_flows=3))
    for port in range(40000, 40006):
        table.add(udp(0.001 * port, True, 10, cport=port))
    ended = table.pop_ended()
    assert [f.key.client_port for f in ended] == [40000, 40001, 40002]
    assert all(f.end_reason == "evicted" for f in ended)
    assert table.stats.evicted == 3 and len(table) == 3 and table.stats.peak_flows == 3


def test_resegmentation_splits_offload_packets_and_keeps_bytes():
    big = tcp(1.0, False, 64000)
    table, flows = _run(handshake() + [big], FlowConfig(resegment_mss=1448))
    f = flows[0]
    assert f.packets == 3 + 45  # ceil(64000 / 1448) = 45
    assert sum(f.payload_len) == 64000
    assert max(f.size) == 40 + 1448


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        FlowConfig(idle_timeout=0)
    with pytest.raises(ValueError):
        FlowConfig(max_flows=0)


def test_ns_flag_does_not_break_the_flow():
    # decode gives 9-bit TCP flags; the NS bit (0x100) must not overflow the flag column
    _, flows = _run([tcp(0.0, True, 0, SYN | 0x100), tcp(0.1, False, 0, SYN | ACK)])
    assert list(flows[0].flags) == [SYN, SYN | ACK]
