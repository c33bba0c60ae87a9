"""Hugging Face Hub availability, decided in at most a few seconds (the client retries ~25 s)."""

from __future__ import annotations

import os
import socket

_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as the Hub client reads it; checked directly because the client reads it once,
    at import."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in _TRUE


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """None when the Hub answers a TCP connect within `timeout`, else why not."""
    from huggingface_hub import constants

    host = constants.ENDPOINT.split("://", 1)[-1].split("/", 1)[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return None
    except OSError as exc:
        return f"{host} unreachable: {exc}"
