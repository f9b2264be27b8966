"""The Hugging Face hub: is it reachable? Asked once before a download, so that an offline machine gets
a one-line answer at once instead of minutes of retries."""

from __future__ import annotations


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers (HF_HUB_OFFLINE=1 says no); also quiets the hub's retry log."""
    import logging
    import os
    import socket

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        socket.create_connection((host, int(port or 443)), timeout=timeout).close()
        return True
    except OSError:
        return False
