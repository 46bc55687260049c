"""An ASGI app served by uvicorn on 127.0.0.1 in a thread: a real HTTP server for clients under
test (``galpipe ctl``) and for the control benchmark."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

__all__ = ["serve_app"]

#: Seconds to wait for uvicorn to listen, and to stop.
START_TIMEOUT_S = 10.0


@contextmanager
def serve_app(app: Any, **config: Any) -> Iterator[str]:
    """Serve ``app`` on a free loopback port for the block; yields its base URL.

    ``config`` goes to :class:`uvicorn.Config` (e.g. ``limit_concurrency``).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, lifespan="off", access_log=False, **config)
    )
    # uvicorn installs no signal handlers outside the main thread: the test run keeps its own.
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        sock.close()
