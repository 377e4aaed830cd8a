"""What the browser tests and the browser benchmark share: how Debian's chromium is started here, and a free
port for ``streamlit run``."""

from __future__ import annotations

import socket

# As root on a closed network chromium needs these; without the networking flags its connections are refused.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
