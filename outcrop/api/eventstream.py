"""AWS event-stream framing (application/vnd.amazon.eventstream), the encoding side.

Each message: total length, headers length, prelude CRC, headers, payload, message CRC; all
big-endian, CRC-32 as zlib computes it. botocore's decoder is the oracle in the tests.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

_STRING = 7


def _header(name: str, value: str) -> bytes:
    name_bytes, value_bytes = name.encode(), value.encode()
    return (struct.pack(">B", len(name_bytes)) + name_bytes + struct.pack(">BH", _STRING, len(value_bytes))
            + value_bytes)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    header_bytes = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack(">II", total, len(header_bytes))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + header_bytes + payload
    return message + struct.pack(">I", zlib.crc32(message))


def encode_event(event_type: str, payload: Any) -> bytes:
    """A modelled event: `:event-type` is the union member's name, the payload its JSON."""
    return encode_message({":message-type": "event", ":event-type": event_type,
                           ":content-type": "application/json"}, json.dumps(payload).encode())


def encode_exception(exception_type: str, message: str) -> bytes:
    """A modelled error mid-stream; boto3 raises EventStreamError with this code while iterating."""
    return encode_message({":message-type": "exception", ":exception-type": exception_type,
                           ":content-type": "application/json"}, json.dumps({"message": message}).encode())
