"""Small ASGI helpers shared by the API and the rating pages."""

from __future__ import annotations


async def read_body(receive, limit: int) -> bytes | None:
    """An ASGI request's whole body, or None as soon as it grows past `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)
