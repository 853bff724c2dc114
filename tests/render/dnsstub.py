"""A tiny DNS server for the render tests, standing in for Docker's embedded DNS (127.0.0.11).

It answers A queries from a table (a name may have several addresses, like an alias with replicas),
unknown names with ``default`` (or NXDOMAIN when that is None), and every other query type (AAAA...)
with an empty NOERROR answer. It records the names asked for. Standard library only, UDP only.
"""

from __future__ import annotations

import socket
import struct
import threading

A, IN = 1, 1
NOERROR, NXDOMAIN = 0, 3


class DnsStub:
    """A DNS server on 127.0.0.1:<free port> in a thread; use as a context manager."""

    def __init__(self, records: dict[str, list[str]] | None = None, default: str | None = "127.0.0.1",
                 ttl: int = 1) -> None:
        self.records = {name.lower(): list(addresses) for name, addresses in (records or {}).items()}
        self.default = default
        self.ttl = ttl
        self.queries: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dnsstub", daemon=True)

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as nginx's resolver directive takes it."""
        host, port = self._sock.getsockname()
        return f"{host}:{port}"

    def set(self, name: str, *addresses: str) -> None:
        """Answer ``name`` with these addresses from now on."""
        with self._lock:
            self.records[name.lower()] = list(addresses)

    def asked(self, name: str) -> int:
        """How many A queries for ``name`` arrived."""
        with self._lock:
            return sum(1 for asked, qtype in self.queries if asked == name.lower() and qtype == A)

    def __enter__(self) -> DnsStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, client = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._reply(packet)
            if reply is not None:
                self._sock.sendto(reply, client)

    def _reply(self, packet: bytes) -> bytes | None:
        if len(packet) < 12:
            return None
        ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
        if flags & 0x8000 or qdcount != 1:
            return None
        name, end = _read_name(packet, 12)
        if name is None or end + 4 > len(packet):
            return None
        qtype, qclass = struct.unpack("!HH", packet[end:end + 4])
        question = packet[12:end + 4]
        with self._lock:
            self.queries.append((name, qtype))
            addresses = self.records.get(name, None if self.default is None else [self.default])
        rcode = NXDOMAIN if addresses is None else NOERROR
        answers = addresses if qtype == A and qclass == IN and addresses else []
        # QR, the query's RD, RA; one question, len(answers) answers.
        header = struct.pack("!HHHHHH", ident, 0x8000 | (flags & 0x0100) | 0x0080 | rcode, 1, len(answers), 0, 0)
        records = b"".join(struct.pack("!HHHIH", 0xC00C, A, IN, self.ttl, 4) + socket.inet_aton(address)
                           for address in answers)
        return header + question + records


def _read_name(packet: bytes, offset: int) -> tuple[str | None, int]:
    labels = []
    while offset < len(packet):
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels).lower(), offset
        if length & 0xC0 or offset + length > len(packet):
            return None, offset  # compression in a question: not something a resolver sends
        labels.append(packet[offset:offset + length].decode("ascii", "replace"))
        offset += length
    return None, offset
