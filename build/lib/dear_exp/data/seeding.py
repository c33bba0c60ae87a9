"""Per-item seeds that depend only on what the item is, never on listing order or process."""

from __future__ import annotations

import hashlib


def item_seed(*parts: object) -> int:
    """A 63-bit seed from a stable hash of its parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
