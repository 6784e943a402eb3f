"""The client's total deadline per call and interrupt() (issue 14, item 13): a server that trickles its answer one
byte at a time cannot keep a call alive past its timeout, and interrupt() ends a call in progress at once."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from neural_human_addon.core.server_client import ServerClient, ServerError


@pytest.fixture()
def trickler():
    """A server on 127.0.0.1 that answers every connection with a valid header, then one body byte every 0.2 s."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
                for _ in range(100):
                    if stop.is_set():
                        return
                    conn.sendall(b" ")
                    time.sleep(0.2)
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    srv.close()


def test_a_trickling_answer_cannot_outlast_the_deadline(trickler):
    client = ServerClient(trickler, token="t", timeout=1.0)
    start = time.monotonic()
    with pytest.raises(ServerError) as err:
        client.health()
    assert err.value.kind == "timeout" and "within 1 s" in err.value.message
    assert time.monotonic() - start < 2.0


def test_interrupt_ends_a_call_in_progress(trickler):
    client = ServerClient(trickler, token="t", timeout=60.0)
    threading.Timer(0.5, client.interrupt).start()
    start = time.monotonic()
    with pytest.raises(ServerError) as err:
        client.health()
    assert err.value.kind == "cancelled"
    assert time.monotonic() - start < 1.5
