"""Network helpers for tests: free ports, waiting for a listener, loopback sockets."""

from collections.abc import Iterator
from contextlib import contextmanager
import socket
import time

import pytest_socket


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    """Block until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


@contextmanager
def loopback_sockets() -> Iterator[None]:
    """Open sockets while a session or module fixture starts a peer, then guard them again.

    Those fixtures run before the per-test fixture that allows loopback sockets.
    """
    guarded = socket.socket
    pytest_socket.enable_socket()
    try:
        yield
    finally:
        socket.socket = guarded  # type: ignore[misc]
