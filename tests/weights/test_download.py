"""Downloading the exact Keras file (``nst_jax.weights._download``) from a local HTTP server.

Nothing is downloaded from the internet: the tests talk to an ``http.server`` bound to
127.0.0.1 in a thread of this process.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import stat
import threading
from typing import ClassVar

import numpy as np
import pytest

from nst_jax import WeightsError
from nst_jax.weights import FILENAME, download_weights


# --------------------------------------------------------------------------- download


PAYLOAD = np.random.default_rng(0).bytes(300_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # needed for the chunked route
    hits: ClassVar[list[str]] = []  # paths requested, in order

    def log_message(self, *args):  # keep test output clean
        pass

    def _head(self, length=None, chunked=False):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _drop(self):
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self):
        self.hits.append(self.path)
        route = self.path.split("/")[1]
        half = len(PAYLOAD) // 2
        if route == "good":
            self._head(len(PAYLOAD))
            self.wfile.write(PAYLOAD)
        elif route == "corrupt":  # right size, one byte changed
            self._head(len(PAYLOAD))
            self.wfile.write(PAYLOAD[:1000] + bytes([PAYLOAD[1000] ^ 0xFF]) + PAYLOAD[1001:])
        elif route == "drop":  # announces the full size, sends half, hangs up
            self._head(len(PAYLOAD))
            self.wfile.write(PAYLOAD[:half])
            self._drop()
        elif route == "chunked_drop":  # chunked transfer, hangs up inside a chunk
            self._head(chunked=True)
            self.wfile.write(b"%x\r\n" % len(PAYLOAD) + PAYLOAD[:half])
            self._drop()
        elif route == "wrong_length":
            self._head(len(PAYLOAD) + 10)
            self.wfile.write(PAYLOAD + b"0123456789")
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing-listens-here"


def _download(dest, *urls, **kwargs):
    kwargs.setdefault("size", len(PAYLOAD))
    kwargs.setdefault("md5", PAYLOAD_MD5)
    return download_weights(dest, urls=tuple(urls), timeout=10, **kwargs)


def test_download_good_file(server, tmp_path):
    calls = []
    path = _download(tmp_path, f"{server}/good/1", progress=lambda d, t: calls.append((d, t)))
    assert path == tmp_path / FILENAME
    assert path.read_bytes() == PAYLOAD
    assert sorted(os.listdir(tmp_path)) == [FILENAME]
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(total == len(PAYLOAD) for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)


def test_download_to_explicit_file_in_new_folder(server, tmp_path):
    dest = tmp_path / "a" / "b" / "mine.h5"
    assert _download(dest, f"{server}/good/2") == dest
    assert dest.read_bytes() == PAYLOAD
    assert os.listdir(dest.parent) == ["mine.h5"]


@pytest.mark.parametrize(
    "route, words",
    [
        pytest.param("corrupt", ["MD5"], id="wrong-checksum"),
        pytest.param("drop", ["150000 of 300000"], id="connection-dropped"),
        pytest.param("wrong_length", ["300010"], id="wrong-size-announced"),
        pytest.param("missing", ["404"], id="http-404"),
    ],
)
def test_download_failure_leaves_nothing(server, tmp_path, route, words):
    url = f"{server}/{route}"
    with pytest.raises(WeightsError) as info:
        _download(tmp_path, url)
    message = str(info.value)
    assert url in message
    said = message.replace(url, "")
    for word in words:
        assert word in said, (word, message)
    assert os.listdir(tmp_path) == []  # no file, no .part leftovers


def test_download_closed_port_fails_cleanly(closed_port_url, tmp_path):
    with pytest.raises(WeightsError, match="nothing-listens-here"):
        _download(tmp_path, closed_port_url)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("first", ["missing", "corrupt", "drop", "closed"])
def test_download_falls_back_to_the_next_mirror(server, tmp_path, closed_port_url, first):
    bad = closed_port_url if first == "closed" else f"{server}/{first}?mirror-test"
    good = f"{server}/good/mirror-{first}"
    path = _download(tmp_path, bad, good)
    assert path.read_bytes() == PAYLOAD
    assert os.listdir(tmp_path) == [FILENAME]
    assert good.removeprefix(server) in _Handler.hits
    if first != "closed":
        assert bad.removeprefix(server) in _Handler.hits


@pytest.mark.parametrize("route", ["corrupt", "drop", "missing"])
def test_failed_download_keeps_existing_file(server, tmp_path, route):
    dest = tmp_path / FILENAME
    existing = b"previously downloaded, must survive" * 100
    dest.write_bytes(existing)
    with pytest.raises(WeightsError):
        _download(tmp_path, f"{server}/{route}")
    assert dest.read_bytes() == existing
    assert os.listdir(tmp_path) == [FILENAME]


def test_download_chunked_connection_dropped(server, tmp_path):
    with pytest.raises(WeightsError):
        _download(tmp_path, f"{server}/chunked_drop")
    assert os.listdir(tmp_path) == []
    assert _download(tmp_path, f"{server}/chunked_drop", f"{server}/good/3").read_bytes() == PAYLOAD


def test_download_into_uncreatable_folder_is_a_weights_error(server, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"x")
    with pytest.raises(WeightsError, match="a_file"):
        _download(blocker / "sub" / "w.h5", f"{server}/good/4")


def test_downloaded_file_has_normal_permissions(server, tmp_path):
    old = os.umask(0o022)
    try:
        path = _download(tmp_path, f"{server}/good/5")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
