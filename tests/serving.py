"""Run a dianjing serve app in this process, on a free loopback port, for tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager


@contextmanager
def running(app, grace: float = 5.0):
    """Serve `app` with dianjing's `Server` in a thread; yields (server, base url); stops it after."""
    from dianjing.infer.server import Server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = Server(app, grace=grace, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.uvicorn.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield server, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.uvicorn.should_exit = True
        thread.join(grace + 15)
        assert not thread.is_alive(), "the server did not stop"
