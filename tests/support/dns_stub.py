"""A small authoritative-style DNS server for integration tests (Python 3.11 standard library).

It listens on 127.0.0.1 (UDP and TCP on the same port, port 0 picks a free one) on background
threads and answers A and AAAA questions from a table set by the test:

    stub = DnsStub().start()
    stub.set_answers("api.example.test", ["127.0.0.1", "::ffff:127.0.0.9"], ttl=300)
    stub.set_behaviour("gone.example.test", DnsStub.NXDOMAIN)
    ... egressd config: dns: {servers: ["%s"]} % stub.address
    stub.lookups("api.example.test")  # distinct queries seen (retransmissions counted once)
    stub.stop()

Names are matched case-insensitively without a trailing dot (the question is echoed back as it
was asked). Answers are sent in the order given: the A records of a name in their order for an A
question, its AAAA records in theirs for an AAAA question; a known name without a record of the
asked type gets NOERROR with an empty answer (NODATA). An unknown name gets NXDOMAIN and is
recorded like any other query, so a test can show that a name was never looked up.

Behaviours per name:
  NXDOMAIN   rcode 3, no answer
  SERVFAIL   rcode 2
  REFUSED    rcode 5
  TIMEOUT    the query is read and counted, never answered
  HOLD       queries are held, unanswered, until release(name); then answered from the table
             (held UDP queries are answered at release; later ones at once)

A UDP answer longer than 512 bytes is sent truncated (TC bit, no records), as a server without
EDNS would, so the client retries over TCP; tcp_queries() tells how many came that way.
Nothing here ever sends a packet anywhere but to the loopback peer that asked.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Iterable, Optional, Union

QTYPE_A = 1
QTYPE_AAAA = 28
QTYPE_NAMES = {1: "A", 28: "AAAA", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
               33: "SRV", 41: "OPT", 65: "HTTPS", 255: "ANY"}

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_REFUSED = 5

UDP_LIMIT = 512


@dataclass
class Query:
    name: str        # normalised: lower case, no trailing dot
    qtype: int
    qid: int
    transport: str   # "udp" or "tcp"
    peer: tuple

    @property
    def qtype_name(self) -> str:
        return QTYPE_NAMES.get(self.qtype, str(self.qtype))


def normalise(name: str) -> str:
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


def _parse_question(msg: bytes) -> Optional[tuple[int, int, bytes, str, int, int]]:
    """(id, flags, raw question bytes, name, qtype, qclass) of a query, None when malformed."""
    if len(msg) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    pos = 12
    labels = []
    while True:
        if pos >= len(msg):
            return None
        n = msg[pos]
        if n & 0xC0:  # a query question is never compressed
            return None
        pos += 1
        if n == 0:
            break
        if pos + n > len(msg):
            return None
        labels.append(msg[pos:pos + n].decode("latin-1"))
        pos += n
    if pos + 4 > len(msg):
        return None
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return qid, flags, msg[12:pos + 4], ".".join(labels), qtype, qclass


class DnsStub:
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    HOLD = "hold"
    BEHAVIOURS = (NXDOMAIN, SERVFAIL, REFUSED, TIMEOUT, HOLD)

    def __init__(self, host: str = "127.0.0.1", tcp: bool = True):
        self.host = host
        self.tcp_enabled = tcp
        self._lock = threading.Condition()
        # name -> list of (qtype, packed rdata, ttl), in the order given
        self._records: dict[str, list[tuple[int, bytes, int]]] = {}
        self._behaviour: dict[str, str] = {}
        self._released: dict[str, threading.Event] = {}
        self._held_udp: dict[str, list[tuple[bytes, tuple]]] = {}
        self.log: list[Query] = []
        self.errors: list[str] = []
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._tcp_conns: set[socket.socket] = set()
        self.udp, self.tcp, self.port = self._bind()

    def _bind(self):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(50):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            if not self.tcp_enabled:
                return udp, None, port
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(64)
            return udp, tcp, port
        raise OSError("no port free for both UDP and TCP")

    # -- table --------------------------------------------------------------------------------

    def set_answers(self, name: str, answers: Iterable[Union[str, tuple[str, int]]],
                    ttl: int = 300) -> None:
        """Replaces the records of name. Each answer is an address (IPv4 -> A, IPv6 -> AAAA)
        or (address, ttl). Clears any behaviour set for the name."""
        recs = []
        for a in answers:
            addr, t = (a, ttl) if isinstance(a, str) else a
            ip = ipaddress.ip_address(addr)
            recs.append((QTYPE_A if ip.version == 4 else QTYPE_AAAA, ip.packed, int(t)))
        key = normalise(name)
        with self._lock:
            self._records[key] = recs
            self._behaviour.pop(key, None)

    def set_behaviour(self, name: str, behaviour: Optional[str]) -> None:
        """NXDOMAIN, SERVFAIL, REFUSED, TIMEOUT, HOLD, or None for the answer table."""
        if behaviour is not None and behaviour not in self.BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}")
        key = normalise(name)
        with self._lock:
            if behaviour is None:
                self._behaviour.pop(key, None)
            else:
                self._behaviour[key] = behaviour
            if behaviour == self.HOLD:
                self._released[key] = threading.Event()

    def release(self, name: str) -> None:
        """Answers every held query of name from the table and stops holding it."""
        key = normalise(name)
        with self._lock:
            if self._behaviour.get(key) == self.HOLD:
                del self._behaviour[key]
            ev = self._released.pop(key, None)
            held = self._held_udp.pop(key, [])
        for msg, peer in held:
            reply = self._answer(msg, "udp", peer, record=False)
            if reply is not None:
                self._send_udp(reply, peer)
        if ev is not None:
            ev.set()

    # -- counters -----------------------------------------------------------------------------

    def queries(self, name: Optional[str] = None, qtype: Optional[int] = None,
                transport: Optional[str] = None) -> list[Query]:
        key = normalise(name) if name is not None else None
        with self._lock:
            return [q for q in self.log
                    if (key is None or q.name == key) and (qtype is None or q.qtype == qtype)
                    and (transport is None or q.transport == transport)]

    def count(self, name: Optional[str] = None, qtype: Optional[int] = None) -> int:
        """Queries received for name (every packet, retransmissions included)."""
        return len(self.queries(name, qtype))

    def lookups(self, name: Optional[str] = None, qtype: Optional[int] = None) -> int:
        """Distinct queries for name: (id, type) pairs, so a retransmission of one query (same
        id) or its retry over TCP after truncation counts once."""
        return len({(q.qid, q.qtype) for q in self.queries(name, qtype)})

    def tcp_queries(self, name: Optional[str] = None) -> int:
        return len(self.queries(name, transport="tcp"))

    def wait_count(self, name: str, n: int, timeout: float = 15.0,
                   qtype: Optional[int] = None) -> bool:
        key = normalise(name)
        with self._lock:
            return self._lock.wait_for(
                lambda: sum(1 for q in self.log if q.name == key
                            and (qtype is None or q.qtype == qtype)) >= n, timeout)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """For egressd's dns.servers: "IP:PORT" (or "[IPv6]:PORT")."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> "DnsStub":
        self.udp.settimeout(0.25)
        threads = [threading.Thread(target=self._udp_loop, daemon=True)]
        if self.tcp is not None:
            self.tcp.settimeout(0.25)
            threads.append(threading.Thread(target=self._tcp_accept_loop, daemon=True))
        for t in threads:
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            events = list(self._released.values())
            conns = list(self._tcp_conns)
            self._lock.notify_all()
        for ev in events:
            ev.set()  # frees TCP handlers waiting on a hold
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(5)
        for s in (self.udp, self.tcp):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- serving --------------------------------------------------------------------------------

    def _udp_loop(self):
        while not self._stopping:
            try:
                msg, peer = self.udp.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                reply = self._answer(msg, "udp", peer)
            except Exception as e:  # a bug in the stub: keep serving, let the test see it
                with self._lock:
                    self.errors.append(f"{type(e).__name__}: {e}")
                continue
            if reply is not None:
                if len(reply) > UDP_LIMIT:
                    reply = self._truncated(reply)
                self._send_udp(reply, peer)

    def _send_udp(self, reply: bytes, peer) -> None:
        try:
            self.udp.sendto(reply, peer)
        except OSError:
            pass

    def _tcp_accept_loop(self):
        while not self._stopping:
            try:
                conn, peer = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(30)
            with self._lock:
                self._tcp_conns.add(conn)
            t = threading.Thread(target=self._tcp_conn, args=(conn, peer), daemon=True)
            t.start()
            self._threads.append(t)

    def _tcp_conn(self, conn: socket.socket, peer):
        buf = bytearray()
        try:
            while not self._stopping:
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                    n = struct.unpack("!H", buf[:2])[0]
                    msg = bytes(buf[2:2 + n])
                    del buf[:2 + n]
                    reply = self._answer(msg, "tcp", peer)
                    if reply is not None:
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
        except OSError:
            pass
        finally:
            with self._lock:
                self._tcp_conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _answer(self, msg: bytes, transport: str, peer, record: bool = True) -> Optional[bytes]:
        """The reply to one query; None when it must not be answered (now)."""
        q = _parse_question(msg)
        if q is None:
            if len(msg) >= 12:  # FORMERR with the id, no question
                return msg[:2] + struct.pack("!HHHHH", 0x8000 | RCODE_FORMERR, 0, 0, 0, 0)
            return None
        qid, flags, question, name, qtype, qclass = q
        key = normalise(name)
        with self._lock:
            if record:
                self.log.append(Query(key, qtype, qid, transport, peer))
                self._lock.notify_all()
            behaviour = self._behaviour.get(key)
            if behaviour == self.HOLD:
                if transport == "udp":
                    self._held_udp.setdefault(key, []).append((msg, peer))
                    return None
                ev = self._released.get(key)
            else:
                ev = None
            records = list(self._records.get(key, ())) if key in self._records else None
        if ev is not None:  # TCP: this connection's thread waits for the release
            ev.wait(60)
            if self._stopping:
                return None
            return self._answer(msg, transport, peer, record=False)
        if behaviour == self.TIMEOUT:
            return None
        rcode = {self.NXDOMAIN: RCODE_NXDOMAIN, self.SERVFAIL: RCODE_SERVFAIL,
                 self.REFUSED: RCODE_REFUSED}.get(behaviour)
        answers: list[tuple[int, bytes, int]] = []
        if rcode is None:
            if records is None:
                rcode = RCODE_NXDOMAIN
            else:
                rcode = RCODE_NOERROR
                if qclass == 1:
                    answers = [r for r in records if r[0] == qtype]
        # QR, opcode copied, AA, RD copied, RA
        out_flags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        head = struct.pack("!HHHHHH", qid, out_flags, 1, len(answers), 0, 0)
        body = bytearray(question)
        for rtype, rdata, ttl in answers:
            # the owner name is a pointer to the question name at offset 12
            body += struct.pack("!HHHIH", 0xC00C, rtype, 1, ttl, len(rdata)) + rdata
        return head + bytes(body)

    @staticmethod
    def _truncated(reply: bytes) -> bytes:
        qid, flags = struct.unpack("!HH", reply[:4])
        # keep the question, drop every record, set TC
        q = _parse_question(reply[:2] + struct.pack("!H", flags & 0x7FFF) + reply[4:])
        question = q[2] if q else b""
        return struct.pack("!HHHHHH", qid, flags | 0x0200, 1 if question else 0, 0, 0, 0) + question
