"""The lab's server side: DNS, HTTPS (HTTP/1.1 + HTTP/2), HTTP/3 over QUIC, a call relay.

Runs as one asyncio process inside the server namespace
(``python -m training.lab.servers --cert C --key K``) and prints ``READY`` once every socket
is bound. Objects are synthetic: ``GET /<anything>?len=N`` answers with N bytes of random
data; a ``Range: bytes=a-b`` header or a ``range=a-b`` query parameter (as googlevideo uses)
selects a byte range and the answer is ``206``. The body bytes come from one random buffer,
so they do not compress.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import ssl
import sys
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from training.lab.topology import CALL_IP, CALL_PORT, DNS_IP, NAMES

__all__ = ["ObjectRequest", "parse_request", "body_bytes", "serve", "main", "CALL_MAGIC"]

_log = logging.getLogger(__name__)

CALL_MAGIC = b"SFCALL1"
_DNS_TTL = 120
_CHUNK = 64 * 1024
_BUF = random.Random(7).randbytes(1 << 20)


@dataclass(frozen=True, slots=True)
class ObjectRequest:
    """What a GET asks for: ``length`` bytes from ``start`` of an object of ``total`` bytes."""

    status: int
    start: int
    length: int
    total: int


def _parse_range(spec: str, total: int) -> tuple[int, int] | None:
    spec = spec.strip()
    if spec.startswith("bytes="):
        spec = spec[6:]
    first, _, last = spec.partition("-")
    try:
        a = int(first)
        b = int(last) if last else total - 1
    except ValueError:
        return None
    if a < 0 or b < a or a >= total:
        return None
    return a, min(b, total - 1)


def parse_request(target: str, range_header: str | None) -> ObjectRequest:
    """Decide the answer to ``GET target`` (with an optional Range header); never raises."""
    query = parse_qs(urlsplit(target).query)
    try:
        total = max(0, min(int(query.get("len", ["0"])[0]), 1 << 31))
    except ValueError:
        total = 0
    if total == 0:
        return ObjectRequest(404, 0, 0, 0)
    spec = range_header or (query["range"][0] if "range" in query else None)
    if spec is None:
        return ObjectRequest(200, 0, total, total)
    rng = _parse_range(spec, total)
    if rng is None:
        return ObjectRequest(416, 0, 0, total)
    return ObjectRequest(206, rng[0], rng[1] - rng[0] + 1, total)


def body_bytes(start: int, length: int) -> bytes:
    """``length`` synthetic body bytes for offset ``start`` (random, incompressible)."""
    off = start % len(_BUF)
    out = bytearray()
    while len(out) < length:
        take = min(length - len(out), len(_BUF) - off)
        out += _BUF[off : off + take]
        off = 0
    return bytes(out)


def _response_headers(req: ObjectRequest) -> list[tuple[str, str]]:
    hdrs = [
        ("content-length", str(req.length)),
        ("content-type", "application/octet-stream"),
        ("cache-control", "private, max-age=21600"),
        ("accept-ranges", "bytes"),
    ]
    if req.status == 206:
        hdrs.append(
            ("content-range", f"bytes {req.start}-{req.start + req.length - 1}/{req.total}")
        )
    return hdrs


# -- HTTP/1.1 ---------------------------------------------------------------------------------
_REASONS = {200: "OK", 206: "Partial Content", 404: "Not Found", 416: "Range Not Satisfiable"}


async def _serve_h1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readline()
        if not line:
            return
        parts = line.decode("latin-1").split()
        headers: dict[str, str] = {}
        while True:
            hl = await reader.readline()
            if hl in (b"\r\n", b"\n", b""):
                break
            k, _, v = hl.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if len(parts) < 2:
            return
        req = parse_request(parts[1], headers.get("range"))
        head = [f"HTTP/1.1 {req.status} {_REASONS.get(req.status, 'OK')}"]
        head += [f"{k}: {v}" for k, v in _response_headers(req)]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        sent = 0
        while sent < req.length:
            n = min(_CHUNK, req.length - sent)
            writer.write(body_bytes(req.start + sent, n))
            sent += n
            await writer.drain()
        await writer.drain()
        if headers.get("connection", "").lower() == "close":
            return


# -- HTTP/2 -----------------------------------------------------------------------------------
async def _serve_h2(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    window = asyncio.Event()
    tasks: dict[int, asyncio.Task[None]] = {}

    async def respond(sid: int, headers: dict[str, str]) -> None:
        req = parse_request(headers.get(":path", "/"), headers.get("range"))
        try:
            conn.send_headers(
                sid,
                [(":status", str(req.status)), *_response_headers(req)],
                end_stream=req.length == 0,
            )
            writer.write(conn.data_to_send())
            sent = 0
            while sent < req.length:
                room = min(
                    conn.local_flow_control_window(sid),
                    conn.max_outbound_frame_size,
                    req.length - sent,
                )
                if room <= 0:
                    window.clear()
                    await window.wait()
                    continue
                conn.send_data(
                    sid, body_bytes(req.start + sent, room), end_stream=sent + room == req.length
                )
                sent += room
                writer.write(conn.data_to_send())
                await writer.drain()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        except ConnectionError:
            return
        finally:
            tasks.pop(sid, None)

    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    hdrs = {str(k): str(v) for k, v in ev.headers or []}
                    sid = int(ev.stream_id or 0)
                    tasks[sid] = asyncio.create_task(respond(sid, hdrs))
                elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                    window.set()
                elif isinstance(ev, h2.events.StreamReset):
                    task = tasks.pop(int(ev.stream_id or 0), None)
                    if task is not None:
                        task.cancel()
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(
                        ev.flow_controlled_length or 0, int(ev.stream_id or 0)
                    )
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    return
            out = conn.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
    finally:
        for task in list(tasks.values()):
            task.cancel()


async def _serve_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sslobj = writer.get_extra_info("ssl_object")
    alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
    try:
        if alpn == "h2":
            await _serve_h2(reader, writer)
        else:
            await _serve_h1(reader, writer)
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    except Exception:  # noqa: BLE001 - one bad connection must not stop the server
        _log.exception("https connection failed")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2)


# -- HTTP/3 -----------------------------------------------------------------------------------
def _h3_protocol_class() -> type:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3Connection
    from aioquic.h3.events import HeadersReceived
    from aioquic.quic.events import ProtocolNegotiated, QuicEvent

    class _H3Server(QuicConnectionProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._h3: H3Connection | None = None

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, ProtocolNegotiated):
                self._h3 = H3Connection(self._quic)
            if self._h3 is None:
                return
            for ev in self._h3.handle_event(event):
                if isinstance(ev, HeadersReceived):
                    hdrs = {k.decode(): v.decode() for k, v in ev.headers}
                    req = parse_request(hdrs.get(":path", "/"), hdrs.get("range"))
                    out = [(b":status", str(req.status).encode())]
                    out += [(k.encode(), v.encode()) for k, v in _response_headers(req)]
                    self._h3.send_headers(ev.stream_id, out, end_stream=req.length == 0)
                    if req.length:
                        self._h3.send_data(
                            ev.stream_id, body_bytes(req.start, req.length), end_stream=True
                        )
                    self.transmit()

    return _H3Server


# -- DNS and call relay ---------------------------------------------------------------------
class _DnsServer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - dnslib raises several types on junk
            return
        reply = query.reply()
        qname = str(query.q.qname).rstrip(".").lower()
        ip = NAMES.get(qname)
        if ip is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif query.q.qtype == QTYPE.A:
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(ip), ttl=_DNS_TTL))
        if self.transport is not None:
            self.transport.sendto(reply.pack(), addr)


class _CallRelay(asyncio.DatagramProtocol):
    """Answers a call stream: after a ``CALL_MAGIC`` + JSON packet it streams back."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._peers: dict[tuple[str, int], asyncio.Task[None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.startswith(CALL_MAGIC) or addr in self._peers:
            return
        try:
            spec = json.loads(data[len(CALL_MAGIC) :].split(b"\0", 1)[0])
            pps = float(spec["pps"])
            mean = float(spec["mean"])
            sd = float(spec["sd"])
            duration = min(float(spec["duration"]), 600.0)
            seed = int(spec["seed"])
        except (ValueError, KeyError, TypeError):
            return
        self._peers[addr] = asyncio.create_task(self._stream(addr, pps, mean, sd, duration, seed))

    async def _stream(
        self, addr: tuple[str, int], pps: float, mean: float, sd: float, duration: float, seed: int
    ) -> None:
        rng = random.Random(seed)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n = 0
        try:
            while loop.time() - t0 < duration and self.transport is not None:
                size = int(min(1200, max(60, rng.gauss(mean, sd))))
                self.transport.sendto(n.to_bytes(4, "big") + _BUF[: size - 4], addr)
                n += 1
                await asyncio.sleep(max(0.0, t0 + n / pps - loop.time()))
        finally:
            self._peers.pop(addr, None)


# -- main -------------------------------------------------------------------------------------
async def serve(cert: str, key: str, stop: asyncio.Event) -> None:
    """Bind every lab service, print ``READY``, and serve until ``stop`` is set.

    Raises:
        OSError: an address cannot be bound (not inside the lab's server namespace).
    """
    from aioquic.asyncio import serve as quic_serve
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    web_ips = sorted(set(NAMES.values()) - {CALL_IP})
    loop = asyncio.get_running_loop()
    tcp = await asyncio.start_server(
        _serve_tls, host=web_ips, port=443, ssl=ctx, reuse_address=True
    )
    qcfg = QuicConfiguration(
        is_client=False,
        alpn_protocols=H3_ALPN,
        congestion_control_algorithm="cubic",
        max_data=16 << 20,
        max_stream_data=8 << 20,
        max_datagram_size=1350,
    )
    qcfg.load_cert_chain(cert, key)
    quic = [
        await quic_serve(ip, 443, configuration=qcfg, create_protocol=_h3_protocol_class())
        for ip in web_ips
    ]
    dns_t, _ = await loop.create_datagram_endpoint(_DnsServer, local_addr=(DNS_IP, 53))
    call_t, _ = await loop.create_datagram_endpoint(_CallRelay, local_addr=(CALL_IP, CALL_PORT))
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        tcp.close()
        for q in quic:
            q.close()
        dns_t.close()
        call_t.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the server process (run inside the server namespace)."""
    ap = argparse.ArgumentParser(prog="python -m training.lab.servers")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SHORTFLOW_LAB_LOG", "WARNING"))

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.cert, args.key, stop)

    asyncio.run(_run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
