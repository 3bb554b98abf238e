"""The stored format of a cached HTTP response ("RCH1").

The rcache module stores opaque bytes.  :mod:`rcache.django` (and anything else
that wants to share its entries) stores a response as::

    offset  size  content
    0       4     magic b"RCH1" -- "rcache HTTP", format version 1
    4       4     N, unsigned 32-bit big-endian: length of the metadata
    8       N     metadata: a UTF-8 JSON object
                    {"status": 200,                 # int, the HTTP status
                     "reason": null,                # str, or null for the default phrase
                     "headers": [["Content-Type", "text/html; charset=utf-8"], ...]}
    8+N     rest  the body, raw bytes

JSON is written compactly (``separators=(",", ":")``, ``ensure_ascii=False``),
keys in the order above, headers in the order the response had them, so the same
response always serializes to the same bytes.  The ETag that :mod:`rcache.django`
sends is the hex MD5 of these bytes -- the same MD5 the module records for the
entry.  A reader must reject (treat as a miss) any value whose magic it does not
know; a future incompatible format gets a new magic (``RCH2``...).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

MAGIC = b"RCH1"
_LEN = struct.Struct(">I")


class FormatError(ValueError):
    """A stored value is not a valid RCH1 record."""


@dataclass
class StoredResponse:
    status: int
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reason: Optional[str] = None

    def dumps(self) -> bytes:
        meta = json.dumps(
            {"status": self.status, "reason": self.reason, "headers": [[k, v] for k, v in self.headers]},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")
        return MAGIC + _LEN.pack(len(meta)) + meta + bytes(self.body)

    @classmethod
    def loads(cls, data: bytes) -> "StoredResponse":
        if len(data) < 8 or data[:4] != MAGIC:
            raise FormatError("not an RCH1 record")
        (n,) = _LEN.unpack_from(data, 4)
        if 8 + n > len(data):
            raise FormatError("truncated metadata")
        try:
            meta = json.loads(data[8 : 8 + n].decode("utf-8"))
            status = meta["status"]
            reason = meta.get("reason")
            headers = [(str(k), str(v)) for k, v in meta["headers"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"bad metadata: {exc}") from exc
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise FormatError("bad status")
        if reason is not None and not isinstance(reason, str):
            raise FormatError("bad reason")
        return cls(status=status, headers=headers, body=bytes(data[8 + n :]), reason=reason)


def etag_of(value: bytes) -> str:
    """The strong ETag (quoted) for a stored value: ``"<hex md5 of the value>"``."""
    return '"' + hashlib.md5(value, usedforsecurity=False).hexdigest() + '"'
