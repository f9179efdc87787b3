"""The real app served by uvicorn in a thread, on an ephemeral loopback port: what a partner or a browser
talks to over real HTTP."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn


class LiveServer:
    """The real app served by uvicorn in a thread, on an ephemeral loopback port."""

    def __init__(self, app: Any, port: int = 0) -> None:
        from app.api.http_protocol import JsonErrorsHttpToolsProtocol

        config = uvicorn.Config(  # the protocol and loop of `passerelle serve`
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            workers=1,
            http=JsonErrorsHttpToolsProtocol,
            loop="uvloop",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
