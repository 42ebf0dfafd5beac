"""A compiled ClientHello scanner for the common case: one payload holds the whole hello.

:func:`scan_first_payloads` walks the name-carrying packets of a chunk (the packets the
fast path would feed to a flow's :class:`~classifier.names.extract.NameExtractor`). For
each flow it looks at the **first** payload it is fed: when that is a TCP payload whose
first TLS record holds a complete ClientHello, it reads the server name and the ALPN list
exactly as :mod:`classifier.names.tls` would and marks the flow's names done; when it
is a UDP payload that is a client Google QUIC packet (Q043 and older, Q044-Q047) whose
CHLO carries an SNI, it reads the name exactly as
:func:`~classifier.names.gquic.parse_gquic_packet` would (source ``gquic``). Every
other packet goes back to Python, to the reference extractor, and so does every flow the
scanner is not sure about: a hello spread over records or segments, IETF QUIC, Q050 and
other UDP, a payload that is not a well-formed hello or CHLO (the reference gives no name
from it, but it may still find one in a later packet), names or protocols with bytes above
0x7F (the reference decodes those as UTF-8 with replacement; ASCII decodes the same
either way).

What the scanner accepts is exactly what one fresh ``NameExtractor.feed`` of that payload
turns into a hello (the same record checks, the same bounds on every length field, the
first ``server_name`` entry of type 0 with a non-empty name, the first ALPN extension that
yields a protocol), so the name columns stay identical.

The strings come back in one ASCII byte buffer per call (the SNI, and the ALPN protocols
joined by ``,`` as ``NameExtractor.alpn`` joins them): Python decodes it once and slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from classifier.capture.packet import TCP, UDP
from classifier.compiled import jit
from classifier.names.gquic import MAX_CHLO_TAGS
from classifier.names.tls import (
    CONTENT_HANDSHAKE,
    EXT_ALPN,
    EXT_SERVER_NAME,
    HS_CLIENT_HELLO,
    MAX_HELLO_BYTES,
    MAX_RECORD_BYTES,
)

__all__ = [
    "DONE",
    "PYTHON",
    "SOURCES",
    "UNSEEN",
    "HelloScan",
    "scan_first_payloads",
    "scan_payload",
]

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
U8 = npt.NDArray[np.uint8]

#: Flow states (``old_state`` of :func:`scan_first_payloads`).
UNSEEN, DONE, PYTHON = 0, 1, 2

#: ``name_source`` of a settled flow, by the scanner's source code.
SOURCES = ("tls", "gquic")
_SRC_TLS, _SRC_GQUIC = 0, 1
_ASCII = 0x80

# result rows
_R_UID, _R_SNI_AT, _R_SNI_LEN, _R_ALPN_AT, _R_ALPN_LEN, _R_SRC = range(6)
_NR = 6


@jit(cache=True, nogil=True, inline="always")
def _u8(buf: U8, p: int) -> int:
    """One byte as int64 (numba's ``int()`` of a uint8 is unsigned: mixing that with
    int64 gives floats)."""
    return np.int64(buf[p])  # type: ignore[return-value]


@jit(cache=True, nogil=True, inline="always")
def _u16(buf: U8, p: int) -> int:
    return (_u8(buf, p) << 8) | _u8(buf, p + 1)


@jit(cache=True, nogil=True)
def _sni(buf: U8, p: int, size: int) -> tuple[int, int]:
    """(start, length) of the first host_name of a server_name extension body, length -1
    when ``tls._parse_sni`` gives ``None``."""
    if size < 2:
        return 0, -1
    n = _u16(buf, p)
    if n > size - 2:
        return 0, -1
    q = p + 2
    end = q + n
    while end - q >= 3:
        kind = buf[q]
        host = _u16(buf, q + 1)
        q += 3
        if host > end - q:
            return 0, -1
        if kind == 0 and host > 0:
            return q, host
        q += host
    return 0, -1


@jit(cache=True, nogil=True)
def _ascii(buf: U8, p: int, size: int) -> bool:
    for k in range(p, p + size):
        if buf[k] >= _ASCII:
            return False
    return True


@jit(cache=True, nogil=True)
def _alpn(buf: U8, p: int, size: int, text: U8, w: int) -> tuple[int, int]:
    """Write the protocols of an ALPN extension body to ``text`` at ``w``, joined by ``,``
    as ``tls._parse_alpn`` reads them. Returns (protocols, end of the written bytes);
    protocols -1 when one of them is not ASCII (the caller defers)."""
    if size < 2:
        return 0, w
    n = _u16(buf, p)
    if n > size - 2:
        return 0, w
    q = p + 2
    end = q + n
    count = 0
    while q < end:
        length = _u8(buf, q)
        q += 1
        if length > end - q:
            break
        if not _ascii(buf, q, length):
            return -1, w
        if count:
            text[w] = 44  # ","
            w += 1
        text[w : w + length] = buf[q : q + length]
        w += length
        q += length
        count += 1
    return count, w


@jit(cache=True, nogil=True)
def _hello(buf: U8, at: int, size: int, text: U8, w: int, out: I64) -> int:
    """Scan the payload ``buf[at:at+size]`` as a flow's first fed payload. When one fresh
    ``NameExtractor`` would parse a ClientHello out of it, write the SNI and the joined
    ALPN to ``text`` from ``w``, set ``out`` (sni start, sni length, alpn start, alpn
    length; length -1 = ``None``) and return the new end of ``text``; else return -1."""
    if size > MAX_HELLO_BYTES or size < 6:
        return -1
    b = at
    if (
        buf[b] != CONTENT_HANDSHAKE
        or buf[b + 1] != 3
        or buf[b + 2] > 4
        or buf[b + 5] != HS_CLIENT_HELLO
    ):
        return -1
    record = _u16(buf, b + 3)
    if record == 0 or record > MAX_RECORD_BYTES:
        return -1
    # the message must fit in the first record's bytes (then the reference's handshake
    # stream starts with exactly these bytes, whatever follows)
    avail = min(record, size - 5)
    if avail < 4:
        return -1
    body = (_u8(buf, b + 6) << 16) | (_u8(buf, b + 7) << 8) | _u8(buf, b + 8)
    if 4 + body > avail:
        return -1
    pos = b + 9
    end = pos + body
    if body < 2 or buf[pos] != 3:  # legacy_version >> 8 == 3
        return -1
    pos += 2 + 32  # version, random
    if pos + 1 > end:
        return -1
    session = _u8(buf, pos)
    pos += 1 + session
    if session > 32 or pos + 2 > end:
        return -1
    pos += 2 + _u16(buf, pos)  # cipher suites
    if pos + 1 > end:
        return -1
    pos += 1 + _u8(buf, pos)  # compression methods
    if pos > end:
        return -1
    sni_at, sni_len, alpn_at, alpn_len = 0, -1, 0, -1
    if end - pos >= 2:  # extensions are optional
        ext_end = pos + 2 + _u16(buf, pos)
        pos += 2
        if ext_end > end:
            return -1
        while pos < ext_end:
            if ext_end - pos < 4:
                return -1
            kind = _u16(buf, pos)
            length = _u16(buf, pos + 2)
            pos += 4
            if length > ext_end - pos:
                return -1
            if kind == EXT_SERVER_NAME and sni_len < 0:
                sni_at, sni_len = _sni(buf, pos, length)
            elif kind == EXT_ALPN and alpn_len < 0:
                count, stop = _alpn(buf, pos, length, text, w)
                if count < 0:
                    return -1
                if count > 0:
                    alpn_at, alpn_len, w = w, stop - w, stop
            pos += length
    if sni_len >= 0:
        if not _ascii(buf, sni_at, sni_len):
            return -1
        text[w : w + sni_len] = buf[sni_at : sni_at + sni_len]
        sni_at = w
        w += sni_len
    out[0], out[1], out[2], out[3] = sni_at, sni_len, alpn_at, alpn_len
    return w


@jit(cache=True, nogil=True)
def _uint_n(buf: U8, p: int, size: int, big: bool) -> int:
    """An unsigned ``size``-byte integer (1-8 bytes) at ``p``, big- or little-endian."""
    v = 0
    for k in range(size):
        v |= _u8(buf, p + (k if big else size - 1 - k)) << (8 * (size - 1 - k))
    return v


@jit(cache=True, nogil=True)
def _gquic_number(buf: U8, p: int) -> int:
    """gquic.gquic_version_number of the 4 bytes at ``p``: ``Q0dd`` -> dd, else -1."""
    if buf[p] != 0x51 or buf[p + 1] != 0x30:
        return -1
    d1 = _u8(buf, p + 2) - 0x30
    d2 = _u8(buf, p + 3) - 0x30
    if d1 < 0 or d1 > 9 or d2 < 0 or d2 > 9:
        return -1
    return 10 * d1 + d2


@jit(cache=True, nogil=True)
def _gquic(buf: U8, at: int, size: int, text: U8, w: int, out: I64) -> int:
    """Scan the UDP payload ``buf[at:at+size]`` as :func:`gquic.parse_gquic_packet` reads
    it. When that gives an SNI (ASCII), write it to ``text`` at ``w``, set ``out`` as
    :func:`_hello` does (no ALPN) and return the new end of ``text``; else return -1."""
    n = size
    if n < 1:
        return -1
    b = at
    first = _u8(buf, b)
    if first & 0x80:  # long header, Q044-Q047
        if n < 6:
            return -1
        number = _gquic_number(buf, b + 1)
        if number < 44 or number > 47:
            return -1
        dcil = _u8(buf, b + 5) >> 4
        scil = _u8(buf, b + 5) & 0x0F
        pos = 6 + (dcil + 3 if dcil else 0) + (scil + 3 if scil else 0) + (first & 0x03) + 1
    else:  # public header, Q043 and older
        if first & 0x03 != 0x01:
            return -1
        cid = 8 if first & 0x08 else 0
        if n < 5 + cid:
            return -1
        number = _gquic_number(buf, b + 1 + cid)
        if number < 0 or number > 43:
            return -1
        pn = (first >> 4) & 0x03
        pos = 5 + cid + (1 if pn == 0 else 2 if pn == 1 else 4 if pn == 2 else 6)
    pos += 12 + (1 if number < 34 else 0)
    if pos >= n:
        return -1
    ftype = _u8(buf, b + pos)
    if ftype & 0x80 == 0:
        return -1
    big = number >= 39
    id_len = (ftype & 0x03) + 1
    off_len = (ftype >> 2) & 0x07
    if off_len:
        off_len += 1
    pos += 1
    if pos + id_len + off_len > n:
        return -1
    if _uint_n(buf, b + pos, id_len, big) != 1:
        return -1
    pos += id_len + off_len
    end = n
    if ftype & 0x20:
        if pos + 2 > n:
            return -1
        end = min(n, pos + 2 + _uint_n(buf, b + pos, 2, big))
        pos += 2
    # the CHLO: gquic.read_chlo on buf[b+pos : b+end]
    m = end - pos
    if m < 8:
        return -1
    c = b + pos
    if buf[c] != 0x43 or buf[c + 1] != 0x48 or buf[c + 2] != 0x4C or buf[c + 3] != 0x4F:
        return -1
    entries = _u8(buf, c + 4) | (_u8(buf, c + 5) << 8)
    if entries > MAX_CHLO_TAGS:
        return -1
    base = 8 + 8 * entries
    prev = 0
    for i in range(entries):
        e = 8 + 8 * i
        if e + 8 > m:
            return -1
        stop = _uint_n(buf, c + e + 4, 4, False)
        if stop < prev:
            return -1
        if (
            buf[c + e] == 0x53
            and buf[c + e + 1] == 0x4E
            and buf[c + e + 2] == 0x49
            and buf[c + e + 3] == 0
        ):  # "SNI\0"
            if stop == prev or base + stop > m:
                return -1
            sni_at = c + base + prev
            sni_len = stop - prev
            if not _ascii(buf, sni_at, sni_len):
                return -1
            text[w : w + sni_len] = buf[sni_at : sni_at + sni_len]
            out[0], out[1], out[2], out[3] = w, sni_len, 0, -1
            return w + sni_len
        prev = stop
    return -1


@jit(
    "Tuple((int64[::1], int64[:, :], uint8[::1]))(Array(uint8, 1, 'C', "
    "readonly=True), int64[::1], int64[::1], int64[::1], int64[::1], int64, int64, "
    "int64[::1], int8[::1])",
    cache=True,
    nogil=True,
)
def _scan(
    buf: U8,
    uid: I64,
    proto: I64,
    at: I64,
    size: I64,
    prev_max: int,
    new_span: int,
    old_uid: I64,
    old_state: I8,
) -> tuple[I64, I64, U8]:
    n = uid.shape[0]
    new_state = np.zeros(new_span, np.int8)
    text = np.empty(1 << 16, np.uint8)  # grown below: a hello writes at most its size
    w = 0
    python = np.empty(n, np.int64)
    n_python = 0
    found = np.empty((_NR, n), np.int64)
    n_found = 0
    out = np.empty(4, np.int64)
    for i in range(n):
        u = uid[i]
        old = u <= prev_max
        k = np.searchsorted(old_uid, u) if old else u - prev_max - 1
        state = old_state[k] if old else new_state[k]
        if state == DONE:
            continue
        if state == UNSEEN:
            if w + size[i] > text.shape[0]:
                grown = np.empty(max(2 * text.shape[0], w + size[i]), np.uint8)
                grown[:w] = text[:w]
                text = grown
            if proto[i] == TCP:
                stop = _hello(buf, at[i], size[i], text, w, out)
            elif proto[i] == UDP:
                stop = _gquic(buf, at[i], size[i], text, w, out)
            else:
                stop = -1
            state = DONE if stop >= 0 else PYTHON
            if old:
                old_state[k] = state
            else:
                new_state[k] = state
            if stop >= 0:
                found[_R_UID, n_found] = u
                found[_R_SNI_AT:_R_SRC, n_found] = out
                # UDP names come from gQUIC (_SRC_GQUIC = 1), TCP ones from TLS (0)
                found[_R_SRC, n_found] = np.int64(proto[i] == UDP)
                n_found += 1
                w = stop
                continue
        python[n_python] = i
        n_python += 1
    return python[:n_python], found[:, :n_found], text[:w]


@dataclass(slots=True)
class HelloScan:
    """What :func:`scan_first_payloads` found in one chunk."""

    python: I64  # positions (in the arrays passed) of the packets Python must still feed
    uids: list[int]  # flows whose names the scanner settled
    names: list[tuple[str | None, str | None]]  # their (sni, alpn), as NameExtractor's
    sources: list[str]  # their name source, as NameExtractor.source ("tls", "gquic")


def scan_first_payloads(
    buf: U8,
    uid: I64,
    proto: I64,
    at: I64,
    size: I64,
    prev_max: int,
    max_uid: int,
    old_uid: I64,
    old_state: I8,
) -> HelloScan:
    """Scan the name-carrying packets of one chunk, in capture order.

    ``buf[at[i]:at[i]+size[i]]`` is packet ``i``'s payload, ``uid[i]`` its flow. Flows with
    ids above ``prev_max`` (up to ``max_uid``) started in this chunk and were never fed;
    the others must be listed in ``old_uid`` (sorted) with their state in ``old_state``
    (:data:`UNSEEN`, :data:`DONE` or :data:`PYTHON`; updated in place). A flow's first
    unseen packet is scanned; the flow is then done (names found here) or Python's: its
    packets from there on are returned in ``python``, to feed in order.
    """
    python, found, text = _scan(
        buf, uid, proto, at, size, prev_max, max(max_uid - prev_max, 0), old_uid, old_state
    )
    decoded = text.tobytes().decode("ascii")
    names = [
        (decoded[s : s + n] if n >= 0 else None, decoded[a : a + m] if m >= 0 else None)
        for s, n, a, m in zip(*found[_R_SNI_AT:_R_SRC].tolist(), strict=True)
    ]
    return HelloScan(
        python, found[_R_UID].tolist(), names, [SOURCES[k] for k in found[_R_SRC].tolist()]
    )


def scan_payload(payload: bytes, proto: int = TCP) -> tuple[str | None, str | None] | None:
    """(sni, alpn) when the scanner settles a flow whose first fed payload is ``payload``
    (``proto`` 6 TCP or 17 UDP), else ``None`` (the flow would go to Python). For tests
    and tools."""
    buf = np.frombuffer(payload, np.uint8) if payload else np.zeros(0, np.uint8)
    one = np.ones(1, np.int64)
    scan = scan_first_payloads(
        buf,
        one,
        one * proto,
        one * 0,
        one * len(payload),
        0,
        1,
        np.empty(0, np.int64),
        np.empty(0, np.int8),
    )
    return scan.names[0] if scan.uids else None
