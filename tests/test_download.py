"""Weight download against a real HTTP server on 127.0.0.1 (no outside network needed).

Each route of the loopback server imitates one behaviour seen in the wild: a well-behaved server
with Range/206 support, one that ignores Range, one that drops the connection mid-file, one that
does not announce a length, a quota page in HTML, and a 404. The server logs every request's
Range header and how many body bytes it sent, so resume tests can prove that only the missing
bytes were transferred.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alphapose_trt import download
from alphapose_trt.download import (
    WEIGHTS,
    WeightSpec,
    cache_dir,
    download_file,
    download_main,
    fetch_weights,
    weights_path,
)
from alphapose_trt.errors import AlphaPoseTrtError

PAYLOAD = random.Random(0).randbytes(300_000)
DROP_AT = 120_000  # bytes the /drop route sends before hanging up
HTML = b"<!DOCTYPE html><html><body>Google Drive - quota exceeded</body></html>"
TIMEOUT = 5.0
STALL_S = 1.5  # the /stall route goes quiet this long; clients in its test time out sooner


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.0 handler: the server closes the socket after every response."""

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        route = {
            "/file": self._ranged,
            "/norange": self._ignore_range,
            "/drop": self._drop,
            "/drop-chunked": self._drop_chunked,
            "/stall": self._stall,
            "/nolength": self._no_length,
            "/html": self._html_page,
            "/html-as-binary": self._html_as_binary,
        }.get(self.path, self._missing)
        entry = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
        self.server.log.append(entry)
        entry["sent"] = route()

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> int:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        return len(body)

    def _ranged(self) -> int:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match is None:
            return self._send(200, PAYLOAD, {"Content-Length": str(len(PAYLOAD))})
        start = int(match.group(1))
        if start >= len(PAYLOAD):
            return self._send(416, b"", {"Content-Range": f"bytes */{len(PAYLOAD)}"})
        body = PAYLOAD[start:]
        return self._send(
            206,
            body,
            {
                "Content-Length": str(len(body)),
                "Content-Range": f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}",
            },
        )

    def _ignore_range(self) -> int:
        return self._send(200, PAYLOAD, {"Content-Length": str(len(PAYLOAD))})

    def _drop(self) -> int:
        return self._send(200, PAYLOAD[:DROP_AT], {"Content-Length": str(len(PAYLOAD))})

    def _drop_chunked(self) -> int:
        self.protocol_version = "HTTP/1.1"  # chunked framing exists only in HTTP/1.1
        self.close_connection = True
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"%x\r\n" % DROP_AT + PAYLOAD[:DROP_AT] + b"\r\n")  # no final 0-chunk
        return DROP_AT

    def _stall(self) -> int:
        sent = self._send(200, PAYLOAD[:DROP_AT], {"Content-Length": str(len(PAYLOAD))})
        self.wfile.flush()
        time.sleep(STALL_S)
        return sent

    def _no_length(self) -> int:
        return self._send(200, PAYLOAD, {"Content-Type": "application/octet-stream"})

    def _html_page(self) -> int:
        headers = {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(HTML))}
        return self._send(200, HTML, headers)

    def _html_as_binary(self) -> int:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(HTML))}
        return self._send(200, b"\n  " + HTML, headers)

    def _missing(self) -> int:
        return self._send(404, b"not here", {"Content-Length": "8"})


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.log = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def base(server) -> str:
    server.log.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def log(server) -> list[dict]:
    return server.log


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def test_full_download_with_progress_bar(base, log, tmp_path, capsys):
    dest = tmp_path / "sub" / "w.bin"
    assert download_file(f"{base}/file", dest, len(PAYLOAD), progress=True, timeout=TIMEOUT) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()
    assert log == [{"path": "/file", "range": None, "sent": len(PAYLOAD)}]
    assert "B/s" in capsys.readouterr().err


def test_resume_requests_only_the_missing_bytes(base, log, tmp_path):
    dest = tmp_path / "w.bin"
    _part(dest).write_bytes(PAYLOAD[:100_000])
    download_file(f"{base}/file", dest, progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()
    assert log == [{"path": "/file", "range": "bytes=100000-", "sent": len(PAYLOAD) - 100_000}]


def test_dropped_connection_keeps_part_then_resumes(base, log, tmp_path):
    dest = tmp_path / "w.bin"
    with pytest.raises(AlphaPoseTrtError, match=r"lost after 120000 of 300000 bytes.*resume"):
        download_file(f"{base}/drop", dest, progress=False, timeout=TIMEOUT)
    assert not dest.exists()
    assert _part(dest).read_bytes() == PAYLOAD[:DROP_AT]
    download_file(f"{base}/file", dest, progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == PAYLOAD
    resumed = {"path": "/file", "range": f"bytes={DROP_AT}-", "sent": len(PAYLOAD) - DROP_AT}
    assert log[-1] == resumed


def test_cut_chunked_body_keeps_what_arrived(base, tmp_path):
    dest = tmp_path / "w.bin"
    with pytest.raises(AlphaPoseTrtError, match=r"lost after 120000 bytes \(the server closed"):
        download_file(f"{base}/drop-chunked", dest, progress=False, timeout=TIMEOUT)
    assert not dest.exists()
    assert _part(dest).read_bytes() == PAYLOAD[:DROP_AT]


def test_stalled_server_times_out_and_keeps_part(base, tmp_path):
    dest = tmp_path / "w.bin"
    with pytest.raises(AlphaPoseTrtError, match=r"lost after 120000 bytes \(connection timed out"):
        download_file(f"{base}/stall", dest, progress=False, timeout=STALL_S / 3)
    assert _part(dest).read_bytes() == PAYLOAD[:DROP_AT]


def test_server_ignoring_range_restarts_from_zero(base, log, tmp_path):
    dest = tmp_path / "w.bin"
    _part(dest).write_bytes(b"x" * 50_000)  # must be overwritten, not appended to
    download_file(f"{base}/norange", dest, progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == PAYLOAD
    assert log == [{"path": "/norange", "range": "bytes=50000-", "sent": len(PAYLOAD)}]


def test_complete_part_is_finished_on_416(base, log, tmp_path):
    dest = tmp_path / "w.bin"
    _part(dest).write_bytes(PAYLOAD)
    download_file(f"{base}/file", dest, progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == PAYLOAD
    assert log == [{"path": "/file", "range": f"bytes={len(PAYLOAD)}-", "sent": 0}]


def test_oversized_part_is_discarded_on_416(base, log, tmp_path):
    dest = tmp_path / "w.bin"
    _part(dest).write_bytes(PAYLOAD + b"junk")
    download_file(f"{base}/file", dest, progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == PAYLOAD
    assert [entry["range"] for entry in log] == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_complete_part_of_expected_size_needs_no_request(base, log, tmp_path):
    dest = tmp_path / "w.bin"
    _part(dest).write_bytes(PAYLOAD)
    download_file(f"{base}/file", dest, len(PAYLOAD), progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == PAYLOAD
    assert log == []


def test_announced_size_mismatch_fails_before_streaming(base, log, tmp_path):
    dest = tmp_path / "w.bin"
    with pytest.raises(AlphaPoseTrtError, match=r"serves 300000 bytes but 300001 were expected"):
        download_file(f"{base}/file", dest, len(PAYLOAD) + 1, progress=False, timeout=TIMEOUT)
    assert not dest.exists() and not _part(dest).exists()


def test_streamed_size_mismatch_leaves_no_file(base, log, tmp_path):
    dest = tmp_path / "w.bin"
    with pytest.raises(AlphaPoseTrtError, match=r"has 300000 bytes but expected 299999"):
        download_file(f"{base}/nolength", dest, len(PAYLOAD) - 1, progress=False, timeout=TIMEOUT)
    assert log[0]["sent"] == len(PAYLOAD)
    assert not dest.exists() and not _part(dest).exists()


def test_download_without_content_length(base, tmp_path):
    dest = tmp_path / "w.bin"
    download_file(f"{base}/nolength", dest, progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == PAYLOAD


def test_connection_refused_is_a_clear_offline_error(tmp_path):
    with socket.socket() as sock:  # bound but not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/w.bin"
        dest = tmp_path / "w.bin"
        with pytest.raises(AlphaPoseTrtError) as info:
            download_file(url, dest, progress=False, timeout=TIMEOUT, manual_url="https://x/y")
    message = str(info.value)
    assert url in message and "connection refused" in message
    assert f"download it manually from https://x/y and place it at {dest}" in message
    assert "\n" not in message
    assert not dest.exists() and not _part(dest).exists()


def test_dns_failure_says_no_network(monkeypatch, tmp_path):
    def unresolvable(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    url = "http://weights.example/w.bin"
    with pytest.raises(AlphaPoseTrtError, match=rf"cannot download {re.escape(url)}: no network"):
        download_file(url, tmp_path / "w.bin", progress=False)


def test_http_404_names_status_and_url(base, tmp_path):
    with pytest.raises(AlphaPoseTrtError, match=r"cannot download .*/gone: HTTP 404"):
        download_file(f"{base}/gone", tmp_path / "w.bin", progress=False, timeout=TIMEOUT)
    assert not (tmp_path / "w.bin").exists()


@pytest.mark.parametrize("route", ["/html", "/html-as-binary"])
def test_html_page_is_detected(base, tmp_path, route):
    dest = tmp_path / "w.bin"
    _part(dest).write_bytes(b"")  # an empty part must not be grown with the page
    with pytest.raises(AlphaPoseTrtError, match=r"HTML page instead of the file.*manually"):
        download_file(f"{base}{route}", dest, progress=False, timeout=TIMEOUT)
    assert not dest.exists()
    assert _part(dest).read_bytes() == b""


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ALPHAPOSE_TRT_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "alphapose-trt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "alphapose-trt"
    monkeypatch.setenv("ALPHAPOSE_TRT_HOME", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert weights_path("yolov3-spp.weights") == tmp_path / "mine" / "yolov3-spp.weights"
    with pytest.raises(AlphaPoseTrtError, match="plain file name"):
        weights_path("../escape.bin")


def test_builtin_table_lists_both_models_with_drive_direct_links():
    yolo, pose = WEIGHTS["yolov3-spp.weights"], WEIGHTS["fast_res50_256x192.pth"]
    assert yolo.urls[0] == "https://pjreddie.com/media/files/yolov3-spp.weights"
    assert "id=1D47msNOOiJKvPOXlnpyzdKA3k6E97NTC&export=download&confirm=t" in yolo.urls[1]
    assert pose.urls[0].startswith("https://drive.usercontent.google.com/download?")
    pose_id = "1kQhnMRURFiy7NsdS8EFL-8vtqEXOgECn"
    assert f"id={pose_id}&export=download&confirm=t" in pose.urls[0]
    assert pose.manual_url == f"https://drive.google.com/file/d/{pose_id}/view"


def _catalog(base: str) -> dict[str, WeightSpec]:
    specs = (
        WeightSpec(
            "a.bin", (f"{base}/gone", f"{base}/file"), "model A", "https://m/a", size=len(PAYLOAD)
        ),
        WeightSpec("b.bin", (f"{base}/norange",), "model B", "https://m/b"),
    )
    return {spec.name: spec for spec in specs}


def test_fetch_weights_falls_back_and_skips_present_files(base, log, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ALPHAPOSE_TRT_HOME", str(home))
    catalog = _catalog(base)
    paths = fetch_weights(progress=False, catalog=catalog)
    assert paths == {"a.bin": home / "a.bin", "b.bin": home / "b.bin"}
    assert all(path.read_bytes() == PAYLOAD for path in paths.values())
    assert [entry["path"] for entry in log] == ["/gone", "/file", "/norange"]

    log.clear()
    assert fetch_weights(progress=False, catalog=catalog) == paths
    assert log == []  # present with the right size: nothing fetched

    (home / "a.bin").write_bytes(b"truncated")
    fetch_weights(["a.bin"], progress=False, catalog=catalog)
    assert (home / "a.bin").read_bytes() == PAYLOAD
    assert [entry["path"] for entry in log] == ["/gone", "/file"]


def test_fetch_weights_reports_every_failed_source(base, tmp_path):
    spec = WeightSpec("c.bin", (f"{base}/gone", f"{base}/html"), "model C", "https://m/c")
    with pytest.raises(AlphaPoseTrtError) as info:
        fetch_weights(dest_dir=tmp_path, progress=False, catalog={"c.bin": spec})
    message = str(info.value)
    assert "could not download c.bin (model C) from any source" in message
    assert "HTTP 404" in message and "HTML page" in message
    assert f"download it manually from https://m/c and place it at {tmp_path / 'c.bin'}" in message
    assert not (tmp_path / "c.bin").exists()


def test_fetch_weights_rejects_unknown_names(tmp_path):
    with pytest.raises(AlphaPoseTrtError, match=r"unknown weight file\(s\) nope.bin; known: "):
        fetch_weights(["nope.bin"], dest_dir=tmp_path)


def test_download_main_prints_paths_of_present_files(tmp_path, capsys, monkeypatch):
    def no_network(*args: object) -> None:
        raise AssertionError("a present file must not be downloaded again")

    monkeypatch.setattr(download, "_fetch_one", no_network)
    for name in ("yolov3-spp.weights", "fast_res50_256x192.pth"):
        with open(tmp_path / name, "wb") as fh:  # sparse file of the recorded size, if any
            fh.truncate(WEIGHTS[name].size or 7)
    assert download_main(None, tmp_path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"yolov3-spp.weights: {tmp_path / 'yolov3-spp.weights'}",
        f"fast_res50_256x192.pth: {tmp_path / 'fast_res50_256x192.pth'}",
    ]


def test_download_main_unknown_name_exits_nonzero(tmp_path, capsys):
    assert download_main(["nope.bin"], tmp_path) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: unknown weight file(s) nope.bin")
