"""Minimal raw RESP2 client used for bulk loading, purges and latency probes.

redis-py is used for control traffic (INFO, CONFIG); this client exists because
per-command overhead matters when loading a million entries and when timing a
sub-millisecond purge.
"""
import socket


class RespError(Exception):
    pass


def _b(a):
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    return str(a).encode()


def encode(*args):
    """One command as RESP bytes."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = _b(a)
        parts.append(b"$%d\r\n" % len(a))
        parts.append(a)
        parts.append(b"\r\n")
    return b"".join(parts)


class Raw:
    def __init__(self, port, host="127.0.0.1", timeout=120.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb", buffering=1 << 20)

    def close(self):
        try:
            self.f.close()
        finally:
            self.sock.close()

    def read_reply(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("connection closed by server")
        t = line[:1]
        body = line[1:-2]
        if t == b"+":
            return body.decode()
        if t == b"-":
            return RespError(body.decode(errors="replace"))
        if t == b":":
            return int(body)
        if t == b"$":
            n = int(body)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(body)
            if n < 0:
                return None
            return [self.read_reply() for _ in range(n)]
        raise ConnectionError("unexpected RESP line %r" % line[:80])

    def call(self, *args):
        self.sock.sendall(encode(*args))
        r = self.read_reply()
        if isinstance(r, RespError):
            raise r
        return r

    def call_raw(self, data):
        """Send pre-encoded single command, return reply (errors returned, not raised)."""
        self.sock.sendall(data)
        return self.read_reply()

    def pipeline(self, commands, batch=1000):
        """Send an iterable of pre-encoded commands in batches.

        Returns (replies_count, errors) where errors is a list of up to 5
        error strings.  Replies themselves are discarded except errors.
        """
        count = 0
        errors = []
        buf = []
        for cmd in commands:
            buf.append(cmd)
            if len(buf) >= batch:
                count += self._flush(buf, errors)
                buf = []
        if buf:
            count += self._flush(buf, errors)
        return count, errors

    def _flush(self, buf, errors):
        self.sock.sendall(b"".join(buf))
        for _ in range(len(buf)):
            r = self.read_reply()
            if isinstance(r, RespError) and len(errors) < 5:
                errors.append(str(r))
        return len(buf)
