"""A test image server on 127.0.0.1: real images, and the awkward answers the safe fetcher must survive.

    /photo.jpg        a real JPEG (a gradient, 640 x 480)
    /alpha.png        a PNG whose alpha channel matters
    /gps.jpg          a JPEG carrying EXIF with a camera maker and GPS coordinates
    /redirect/<n>     n redirects (302, relative Location), then /photo.jpg
    /to?url=<url>     one 302 to <url>
    /big.jpg          a body larger than the tests' `max_image_bytes`, with its Content-Length
    /big-chunked.jpg  the same, chunked: no Content-Length to trust
    /slow.jpg         the JPEG a few bytes at a time, slower than the tests' fetch timeout
    /fake.jpg         HTML served as image/jpeg
    /bomb.png         a PNG header claiming 40000 x 40000 pixels
    /gzip.jpg         the JPEG with Content-Encoding: gzip
    /missing.jpg      404

It counts every TCP connection it accepts, so a test can prove that none was made.
"""

from __future__ import annotations

import gzip
import struct
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

BIG_BYTES = 300_000
CAMERA = "HanseTestCam"
SLOW_STEP_S = 0.25


def photo_jpeg(size: tuple[int, int] = (640, 480), exif: bytes = b"") -> bytes:
    """A real photo-like JPEG: a colour gradient."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image = Image.merge(
        "RGB", (image.getchannel(0), image.rotate(90).getchannel(0), image.getchannel(0))
    )
    out = BytesIO()
    image.save(out, "JPEG", quality=85, exif=exif)
    return out.getvalue()


def alpha_png() -> bytes:
    image = Image.new("RGBA", (64, 48), (20, 120, 220, 255))
    image.paste((255, 0, 0, 0), (0, 0, 32, 48))  # the left half fully transparent
    out = BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def gps_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = CAMERA  # Make
    exif[0x8825] = {1: "N", 2: (53.0, 33.0, 2.0), 3: "E", 4: (10.0, 0.0, 1.0)}  # GPS IFD: Hamburg
    return exif.tobytes()


def bomb_png(side: int = 40_000) -> bytes:
    """A PNG whose header claims `side` x `side` pixels, with a tiny body: never decode it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


PHOTO = photo_jpeg()
ALPHA = alpha_png()
GPS = photo_jpeg((320, 240), gps_exif())
BOMB = bomb_png()


class ImageServer:
    """A threaded HTTP server on 127.0.0.1; `url(path)` names one of its answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = _CountingServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.images = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def accepted(self) -> None:
        with self._lock:
            self.connections += 1

    def record(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.paths.append(path)
            self.headers.append(headers)

    def clear(self) -> None:
        with self._lock:
            self.connections = 0
            self.paths.clear()
            self.headers.clear()


class _CountingServer(ThreadingHTTPServer):
    def get_request(self) -> Any:
        request = super().get_request()
        self.images.accepted()  # type: ignore[attr-defined]
        return request

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A fetcher that gives up (size cap, timeout) drops its connection: expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def images(self) -> ImageServer:
        return self.server.images  # type: ignore[attr-defined, no-any-return]

    def do_GET(self) -> None:
        self.images.record(self.path, dict(self.headers.items()))
        url = urlsplit(self.path)
        path = url.path
        try:
            if path == "/photo.jpg":
                self._send(200, PHOTO, "image/jpeg")
            elif path == "/alpha.png":
                self._send(200, ALPHA, "image/png")
            elif path == "/gps.jpg":
                self._send(200, GPS, "image/jpeg")
            elif path.startswith("/redirect/"):
                left = int(path.rsplit("/", 1)[1])
                target = f"/redirect/{left - 1}" if left > 1 else "/photo.jpg"
                self._send(302, b"", "text/plain", {"Location": target})
            elif path == "/to":
                self._send(302, b"", "text/plain", {"Location": parse_qs(url.query)["url"][0]})
            elif path == "/big.jpg":
                self._send(200, PHOTO + b"\x00" * BIG_BYTES, "image/jpeg")
            elif path == "/big-chunked.jpg":
                self._chunked(PHOTO + b"\x00" * BIG_BYTES)
            elif path == "/slow.jpg":
                self._slow(PHOTO)
            elif path == "/fake.jpg":
                self._send(200, b"<html><body>not an image</body></html>", "image/jpeg")
            elif path == "/bomb.png":
                self._send(200, BOMB, "image/png")
            elif path == "/gzip.jpg":
                self._send(200, gzip.compress(PHOTO), "image/jpeg", {"Content-Encoding": "gzip"})
            else:
                self._send(404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _chunked(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(data), 16_384):
            piece = data[start : start + 16_384]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _slow(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for start in range(0, len(data), 64):
            if self.images.stopping.wait(SLOW_STEP_S):
                break
            self.wfile.write(data[start : start + 64])
            self.wfile.flush()
        self.close_connection = True
