"""Legacy and compute targets used only by the tests (the gateway imports them by path)."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from gateway.web.request_id import current_request_id


def whoami() -> dict[str, Any]:
    """A legacy function: what a blocking client running on a pool thread can see."""
    return {"request_id": current_request_id.get(), "thread": threading.current_thread().name}


def hold(port: str) -> dict[str, Any]:
    """A compute function that tells the test its worker PID, then runs until released."""
    with socket.create_connection(("127.0.0.1", int(port)), timeout=60) as sock:
        sock.sendall(f"{os.getpid()}\n".encode())
        sock.recv(1)  # returns when the test closes the connection (or kills this worker)
    return {"pid": os.getpid()}


def pid() -> dict[str, Any]:
    """A legacy function: the PID of the gateway (worker) process that ran the call."""
    return {"pid": os.getpid()}


def echo_args(**kwargs: str) -> dict[str, Any]:
    """A legacy or compute function that answers the keyword arguments it was called with."""
    return {"args": kwargs}
