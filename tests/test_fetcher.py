"""The safe fetcher in-process, against the test image server on 127.0.0.1 (allowed where a test says)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from ipaddress import ip_address, ip_network

import pytest

from hanse.config.limits import ImagesConfig
from hanse.errors import HanseError
from hanse.vision.fetcher import PinnedResolver, SafeFetcher
from tests.imageserver import PHOTO, ImageServer

MAX_BYTES = 200_000
LOOPBACK_ALLOWED = ImagesConfig(
    allow_hosts=("127.0.0.1:*",), timeout_s=1.5, read_timeout_s=1.0, connect_timeout_s=1.0
)


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    server = ImageServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh(images: ImageServer) -> None:
    images.clear()


def fetch(url: str, config: ImagesConfig = LOOPBACK_ALLOWED) -> bytes:
    return asyncio.run(SafeFetcher(config, MAX_BYTES).fetch(url))


def refused(url: str, config: ImagesConfig = LOOPBACK_ALLOWED) -> HanseError:
    with pytest.raises(HanseError) as caught:
        fetch(url, config)
    return caught.value


def test_fetches_an_allowed_image(images: ImageServer) -> None:
    assert fetch(images.url("/photo.jpg")) == PHOTO
    [headers] = images.headers
    assert headers["Host"] == f"127.0.0.1:{images.port}"
    assert headers["Accept-Encoding"] == "identity"
    assert "Cookie" not in headers and "Authorization" not in headers


def test_an_allowed_cidr_admits_its_addresses(images: ImageServer) -> None:
    config = ImagesConfig(allow_cidrs=(ip_network("127.0.0.0/8"),))
    assert fetch(images.url("/photo.jpg"), config) == PHOTO


def test_an_allowed_host_name_is_resolved_once_and_pinned(images: ImageServer) -> None:
    # `localhost` comes from the hosts file: the lookup, the pin and the connection stay on loopback.
    config = ImagesConfig(allow_hosts=("localhost:*",), connect_timeout_s=1.0)
    assert fetch(images.url("/photo.jpg", host="localhost"), config) == PHOTO
    assert images.headers[0]["Host"] == f"localhost:{images.port}"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST.", "[::1]", "0x7f.1"])
def test_the_default_policy_refuses_loopback_without_connecting(
    images: ImageServer, host: str
) -> None:
    error = refused(images.url("/photo.jpg", host=host), ImagesConfig())
    assert error.error.code == "VALIDATION_4203"
    assert error.details["reason"] == "loopback"
    assert images.connections == 0


def test_redirects_are_followed_a_few_times(images: ImageServer) -> None:
    assert fetch(images.url("/redirect/3")) == PHOTO
    assert len(images.paths) == 4
    error = refused(images.url("/redirect/4"))
    assert error.error.code == "VALIDATION_4204"
    assert error.details["reason"] == "more than 3 redirects"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://localhost:{port}/photo.jpg", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:10.0.0.1]/", "private (IPv4-mapped)"),
        ("file:///etc/passwd", "only http and https URLs are fetched"),
        ("http://user:secret@127.0.0.1:{port}/photo.jpg", "URLs with credentials are not fetched"),
    ],
)
def test_every_redirect_hop_is_checked_again(images: ImageServer, target: str, reason: str) -> None:
    location = target.format(port=images.port)
    error = refused(images.url(f"/to?url={location}"))
    assert (error.error.code, error.details["reason"]) == ("VALIDATION_4203", reason)
    assert images.connections == 1  # the first hop only


@pytest.mark.parametrize("path", ["/big.jpg", "/big-chunked.jpg"])
def test_the_size_cap_is_counted_while_reading(images: ImageServer, path: str) -> None:
    error = refused(images.url(path))
    assert error.error.code == "VALIDATION_4202"
    assert error.details == {"max_bytes": MAX_BYTES}


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/slow.jpg", "timed out"),
        ("/gzip.jpg", "a compressed answer (gzip)"),
        ("/missing.jpg", "the server answered 404"),
    ],
)
def test_fetch_failures(images: ImageServer, path: str, reason: str) -> None:
    error = refused(images.url(path))
    assert (error.error.code, error.details["reason"]) == ("VALIDATION_4204", reason)


def test_a_closed_port_fails_cleanly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = refused(f"http://127.0.0.1:{port}/photo.jpg")
    assert (error.error.code, error.details["reason"]) == ("VALIDATION_4204", "cannot connect")


@pytest.mark.parametrize("url", ["not a url", "http://[::1", "/photo.jpg", "gopher://127.0.0.1/"])
def test_what_is_not_an_http_url_is_refused(url: str) -> None:
    assert refused(url).error.code == "VALIDATION_4203"


def test_the_pinned_resolver_answers_only_for_the_checked_host() -> None:
    async def run() -> None:
        resolver = PinnedResolver()
        resolver.host, resolver.addresses = "images.example", [ip_address("192.0.2.10")]
        [result] = await resolver.resolve("images.example", 443, socket.AF_UNSPEC)
        assert (result["host"], result["port"], result["hostname"]) == (
            "192.0.2.10",
            443,
            "images.example",
        )
        with pytest.raises(OSError, match="not checked"):
            await resolver.resolve("rebound.example", 443)

    asyncio.run(run())
