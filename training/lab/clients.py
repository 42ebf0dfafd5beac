"""Client protocol stacks for the lab's player emulators.

A :class:`Resolver` asks the lab DNS server over real UDP (A and AAAA, like a phone's stub
resolver) and caches answers for their TTL. A :class:`Fetcher` turns ``GET host/path`` into a
real HTTP/1.1 or HTTP/2 request over TLS (``ssl``, ``h2``) or an HTTP/3 request over QUIC
(``aioquic``), reusing one connection per host (a pool of up to six for HTTP/1.1). Cancelling
the awaiting task abandons the download the way a player does: RST_STREAM on HTTP/2,
STOP_SENDING on HTTP/3, closing the connection on HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnslib import QTYPE, DNSRecord

from training.lab.topology import DNS_IP, LabError

__all__ = ["Resolver", "Fetcher", "FetchStats", "PROTOCOLS"]

_log = logging.getLogger(__name__)

PROTOCOLS = ("h1", "h2", "h3")
_H3_CANCELLED = 0x10C


class Resolver:
    """Stub resolver talking to the lab DNS server with real UDP queries."""

    def __init__(self, server: str = DNS_IP, seed: int = 0) -> None:
        self._server = server
        self._cache: dict[str, tuple[str, float]] = {}
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._rng = random.Random(seed)
        self.queries = 0

    async def resolve(self, name: str) -> str:
        """The IPv4 address of ``name``.

        Raises:
            LabError: no answer after three tries, or the name does not exist.
        """
        hit = self._cache.get(name)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        if name in self._pending:
            return await asyncio.shield(self._pending[name])
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[name] = fut
        try:
            ip, ttl = await self._query(name)
            self._cache[name] = (ip, time.monotonic() + ttl)
            fut.set_result(ip)
            return ip
        except BaseException as exc:
            fut.set_exception(exc if isinstance(exc, Exception) else LabError("cancelled"))
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._pending[name]

    async def _query(self, name: str) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        for _attempt in range(3):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.connect((self._server, 53))
                qa = DNSRecord.question(name, "A")
                qa.header.id = self._rng.randrange(1, 65536)
                q6 = DNSRecord.question(name, "AAAA")
                q6.header.id = (qa.header.id + 1) % 65536 or 1
                for q in (qa, q6):
                    await loop.sock_sendall(sock, q.pack())
                    self.queries += 1
                deadline = loop.time() + 1.0
                while loop.time() < deadline:
                    try:
                        data = await asyncio.wait_for(
                            loop.sock_recv(sock, 4096), deadline - loop.time()
                        )
                    except TimeoutError:
                        break
                    try:
                        reply = DNSRecord.parse(data)
                    except Exception:  # noqa: BLE001 - dnslib raises several types
                        continue
                    if reply.header.id != qa.header.id:
                        continue
                    if reply.header.rcode != 0:
                        raise LabError(f"lab DNS has no name {name!r}")
                    for rr in reply.rr:
                        if rr.rtype == QTYPE.A:
                            return str(rr.rdata), int(rr.ttl)
                    raise LabError(f"lab DNS gave no address for {name!r}")
            finally:
                sock.close()
        raise LabError(f"lab DNS server {self._server} did not answer for {name!r}")


@dataclass
class FetchStats:
    """Counters a :class:`Fetcher` keeps."""

    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    bytes: int = 0
    connections: int = 0
    hosts: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "requests": self.requests,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "failed": self.failed,
            "bytes": self.bytes,
            "connections": self.connections,
            "hosts": sorted(self.hosts),
        }


class _Conn:
    alive = True

    async def get(self, target: str, headers: list[tuple[str, str]], stats: FetchStats) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _H1Pool(_Conn):
    """Up to six keep-alive HTTP/1.1 connections to one host."""

    def __init__(self, ip: str, host: str, ctx: ssl.SSLContext, stats: FetchStats) -> None:
        self._ip, self._host, self._ctx, self._stats = ip, host, ctx, stats
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._sem = asyncio.Semaphore(6)
        self._open: set[asyncio.StreamWriter] = set()

    async def get(self, target: str, headers: list[tuple[str, str]], stats: FetchStats) -> int:
        async with self._sem:
            if self._idle:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(
                    self._ip, 443, ssl=self._ctx, server_hostname=self._host
                )
                self._stats.connections += 1
                self._open.add(writer)
            try:
                lines = [f"GET {target} HTTP/1.1", f"Host: {self._host}"]
                lines += [f"{k}: {v}" for k, v in headers]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                status = await reader.readline()
                if not status.startswith(b"HTTP/1.1"):
                    raise ConnectionError("bad HTTP/1.1 status line")
                length = 0
                while True:
                    hl = await reader.readline()
                    if hl in (b"\r\n", b""):
                        break
                    k, _, v = hl.decode("latin-1").partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v.strip())
                got = 0
                while got < length:
                    chunk = await reader.read(min(65536, length - got))
                    if not chunk:
                        raise ConnectionError("HTTP/1.1 body cut short")
                    got += len(chunk)
                    stats.bytes += len(chunk)
                self._idle.append((reader, writer))
                return got
            except BaseException:
                writer.transport.abort()
                self._open.discard(writer)
                raise

    async def close(self) -> None:
        for writer in list(self._open):
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        self._open.clear()
        self._idle.clear()


class _H2Conn(_Conn):
    """One HTTP/2 connection with Chrome-like flow-control windows."""

    def __init__(self, ip: str, host: str, ctx: ssl.SSLContext) -> None:
        self._ip, self._host, self._ctx = ip, host, ctx
        self._streams: dict[int, asyncio.Future[int]] = {}
        self._counts: dict[int, int] = {}
        self._stats: FetchStats | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        import h2.config
        import h2.connection
        import h2.settings

        self._reader, self._writer = await asyncio.open_connection(
            self._ip, 443, ssl=self._ctx, server_hostname=self._host
        )
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._h2.initiate_connection()
        self._h2.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 6 << 20,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            }
        )
        self._h2.increment_flow_control_window(15 << 20)
        self._writer.write(self._h2.data_to_send())
        self._task = asyncio.create_task(self._read_loop())

    def _fail_all(self, exc: Exception) -> None:
        self.alive = False
        for fut in self._streams.values():
            if not fut.done():
                fut.set_exception(exc)
        self._streams.clear()

    async def _read_loop(self) -> None:
        import h2.events

        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    raise ConnectionError("HTTP/2 connection closed by server")
                for ev in self._h2.receive_data(data):
                    sid = int(getattr(ev, "stream_id", 0) or 0)
                    if isinstance(ev, h2.events.DataReceived):
                        n = len(ev.data or b"")
                        self._counts[sid] = self._counts.get(sid, 0) + n
                        if self._stats is not None:
                            self._stats.bytes += n
                        self._h2.acknowledge_received_data(ev.flow_controlled_length or 0, sid)
                    elif isinstance(ev, h2.events.StreamEnded):
                        fut = self._streams.pop(sid, None)
                        if fut is not None and not fut.done():
                            fut.set_result(self._counts.pop(sid, 0))
                    elif isinstance(ev, h2.events.StreamReset):
                        fut = self._streams.pop(sid, None)
                        if fut is not None and not fut.done():
                            fut.set_exception(ConnectionError("stream reset by server"))
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        raise ConnectionError("HTTP/2 GOAWAY from server")
                out = self._h2.data_to_send()
                if out:
                    self._writer.write(out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure ends the connection
            self._fail_all(exc if isinstance(exc, ConnectionError) else ConnectionError(exc))

    async def get(self, target: str, headers: list[tuple[str, str]], stats: FetchStats) -> int:
        import h2.errors

        self._stats = stats
        sid = self._h2.get_next_available_stream_id()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._streams[sid] = fut
        self._h2.send_headers(
            sid,
            [
                (":method", "GET"),
                (":authority", self._host),
                (":scheme", "https"),
                (":path", target),
                *headers,
            ],
            end_stream=True,
        )
        self._writer.write(self._h2.data_to_send())
        try:
            return await fut
        except asyncio.CancelledError:
            if self._streams.pop(sid, None) is not None and self.alive:
                with contextlib.suppress(Exception):
                    self._h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    self._writer.write(self._h2.data_to_send())
            raise

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._h2.close_connection()
            self._writer.write(self._h2.data_to_send())
            await asyncio.wait_for(self._writer.drain(), 1.0)
        if self._task is not None:
            self._task.cancel()
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        self.alive = False


def _h3_client_class() -> type:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

    class _H3Client(QuicConnectionProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.h3 = H3Connection(self._quic)
            self.streams: dict[int, asyncio.Future[int]] = {}
            self.counts: dict[int, int] = {}
            self.stats: FetchStats | None = None
            self.dead = False

        def _finish(self, sid: int, exc: Exception | None = None) -> None:
            fut = self.streams.pop(sid, None)
            if fut is not None and not fut.done():
                if exc is None:
                    fut.set_result(self.counts.pop(sid, 0))
                else:
                    fut.set_exception(exc)

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, ConnectionTerminated):
                self.dead = True
                for sid in list(self.streams):
                    self._finish(sid, ConnectionError("QUIC connection closed"))
                return
            if isinstance(event, StreamReset):
                self._finish(event.stream_id, ConnectionError("stream reset by server"))
            for ev in self.h3.handle_event(event):
                if isinstance(ev, DataReceived):
                    self.counts[ev.stream_id] = self.counts.get(ev.stream_id, 0) + len(ev.data)
                    if self.stats is not None:
                        self.stats.bytes += len(ev.data)
                    if ev.stream_ended:
                        self._finish(ev.stream_id)
                elif isinstance(ev, HeadersReceived) and ev.stream_ended:
                    self._finish(ev.stream_id)

    return _H3Client


class _H3Conn(_Conn):
    """One HTTP/3 connection (aioquic, CUBIC, Chrome-like flow-control windows)."""

    def __init__(self, ip: str, host: str, ca: Path) -> None:
        self._ip, self._host, self._ca = ip, host, ca
        self._proto: Any = None
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        from aioquic.h3.connection import H3_ALPN
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.connection import QuicConnection

        cfg = QuicConfiguration(
            is_client=True,
            alpn_protocols=H3_ALPN,
            server_name=self._host,
            congestion_control_algorithm="cubic",
            max_data=15 << 20,
            max_stream_data=6 << 20,
            max_datagram_size=1350,
        )
        cfg.load_verify_locations(str(self._ca))
        loop = asyncio.get_running_loop()
        cls = _h3_client_class()
        conn = QuicConnection(configuration=cfg)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", 0))
        transport, proto = await loop.create_datagram_endpoint(lambda: cls(conn), sock=sock)
        self._transport = transport
        self._proto = proto
        proto.connect((self._ip, 443))
        await asyncio.wait_for(proto.wait_connected(), 10.0)

    @property
    def alive(self) -> bool:  # type: ignore[override]
        return self._proto is not None and not self._proto.dead

    async def get(self, target: str, headers: list[tuple[str, str]], stats: FetchStats) -> int:
        proto = self._proto
        proto.stats = stats
        quic = proto._quic
        sid = quic.get_next_available_stream_id()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        proto.streams[sid] = fut
        hdrs = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", self._host.encode()),
            (b":path", target.encode()),
        ]
        hdrs += [(k.encode(), v.encode()) for k, v in headers]
        proto.h3.send_headers(sid, hdrs, end_stream=True)
        proto.transmit()
        try:
            return await fut
        except asyncio.CancelledError:
            if proto.streams.pop(sid, None) is not None and not proto.dead:
                with contextlib.suppress(Exception):
                    quic.stop_stream(sid, _H3_CANCELLED)
                    proto.transmit()
            raise

    async def close(self) -> None:
        if self._proto is not None:
            with contextlib.suppress(Exception):
                self._proto.close()
                await asyncio.wait_for(self._proto.wait_closed(), 1.0)
        if self._transport is not None:
            self._transport.close()
        self._proto = None


class Fetcher:
    """Issues GETs over one protocol (``h1``, ``h2`` or ``h3``), one connection per host.

    Raises (from :meth:`get`):
        LabError: the name does not resolve.
        ConnectionError / ssl.SSLError / TimeoutError: the transfer failed.
    """

    def __init__(self, protocol: str, ca: Path, resolver: Resolver, seed: int = 0) -> None:
        if protocol not in PROTOCOLS:
            raise LabError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self.stats = FetchStats()
        self._ca = ca
        self._resolver = resolver
        self._conns: dict[str, _Conn] = {}
        self._retired: list[_Conn] = []
        self._locks: dict[str, asyncio.Lock] = {}
        rng = random.Random(seed)
        self._headers = [
            ("user-agent", "Mozilla/5.0 (Linux; Android 14; lab-emulator) shortflow-lab/1"),
            ("accept", "*/*"),
            ("accept-encoding", "identity"),
            ("cookie", "lab=" + rng.randbytes(rng.randint(60, 300)).hex()),
        ]
        self._ctx = ssl.create_default_context(cafile=str(ca))
        self._ctx.set_alpn_protocols(["h2", "http/1.1"] if protocol == "h2" else ["http/1.1"])

    async def _conn(self, host: str) -> _Conn:
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            conn = self._conns.get(host)
            if conn is not None and conn.alive:
                return conn
            ip = await self._resolver.resolve(host)
            if self.protocol == "h1":
                conn = _H1Pool(ip, host, self._ctx, self.stats)
            elif self.protocol == "h2":
                h2c = _H2Conn(ip, host, self._ctx)
                await h2c.open()
                self.stats.connections += 1
                conn = h2c
            else:
                h3c = _H3Conn(ip, host, self._ca)
                await h3c.open()
                self.stats.connections += 1
                conn = h3c
            self._conns[host] = conn
            self.stats.hosts.add(host)
            return conn

    async def get(
        self,
        host: str,
        path: str,
        start: int | None = None,
        end: int | None = None,
        range_in_query: bool = False,
    ) -> int:
        """GET ``https://host/path``, optionally bytes ``start..end`` (inclusive).

        Returns the body bytes received. Cancelling the caller abandons the transfer.
        """
        headers = list(self._headers)
        if start is not None and end is not None:
            if range_in_query:
                path = f"{path}&range={start}-{end}"
            else:
                headers.append(("range", f"bytes={start}-{end}"))
        self.stats.requests += 1
        try:
            conn = await self._conn(host)
            n = await conn.get(path, headers, self.stats)
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        except Exception:
            self.stats.failed += 1
            raise
        self.stats.completed += 1
        return n

    def renew(self, host: str) -> None:
        """The next request to ``host`` opens a new connection, as a player that replaces
        its connection does; the old one finishes what it carries and stays open, idle,
        until :meth:`aclose`."""
        conn = self._conns.pop(host, None)
        if conn is not None:
            self._retired.append(conn)

    async def aclose(self) -> None:
        """Close every connection gracefully (GOAWAY / CONNECTION_CLOSE / FIN)."""
        for conn in [*self._conns.values(), *self._retired]:
            with contextlib.suppress(Exception):
                await conn.close()
        self._conns.clear()
        self._retired.clear()
