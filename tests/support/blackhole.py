"""A TCP listener that accepts connections and never answers: a database hung behind a proxy, a stuck Redis, a
mail server that takes the connection and then says nothing."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any


class BlackHole:
    """Listens on a free port of 127.0.0.1 from its creation; `close` (or leaving its `with`) stops it and every
    connection it took."""

    def __init__(self, backlog: int = 64) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        # shutdown wakes the thread blocked in accept() (close alone does not, on Linux): the join below then
        # returns at once, never through its timeout, which never comes under a faked clock
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.accepted:
            conn.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()
