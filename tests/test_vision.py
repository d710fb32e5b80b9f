"""Vision end to end: a real gateway, the test image server and a scripted vision upstream, all on loopback.

The upstream records what it received, so the tests can see that it got a re-encoded `data:` URI
without metadata, and never the client's URL.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.harness import GatewayProcess
from tests.imageserver import CAMERA, GPS, ImageServer
from tests.upstream import ScriptedUpstream

LIMITS = "[limits]\nmax_image_bytes = 200000\nmax_images = 3\n\n"
IMAGES = (
    '[images]\nallow_hosts = ["127.0.0.1:*"]\nmax_side = 512\n'
    "timeout_s = 1.5\nread_timeout_s = 1\nconnect_timeout_s = 1\n\n"
)


def catalog(upstream_url: str, images: str = IMAGES) -> str:
    text = LIMITS + images
    text += f'[[providers]]\nid = "up"\nkind = "openai_compatible"\nbase_url = "{upstream_url}"\n\n'
    for model, context, vision in [("vision", 4096, True), ("text-only", 4096, False)]:
        text += f'[[models]]\nid = "{model}"\ncontext_length = {context}\n'
        text += f"capabilities = {{ vision = {str(vision).lower()} }}\n"
        text += '[[models.routes]]\nprovider = "up"\nupstream_model = "ok"\n\n'
    text += '[[models]]\nid = "priced-vision"\ncontext_length = 4096\ncapabilities = { vision = true }\n'
    text += '[[models.routes]]\nprovider = "up"\nupstream_model = "ok"\n'
    text += 'input_eur_per_million = "2"\noutput_eur_per_million = "6"\n\n'
    text += (
        '[[models]]\nid = "tiny-vision"\ncontext_length = 270\ncapabilities = { vision = true }\n'
    )
    return text + '[[models.routes]]\nprovider = "up"\nupstream_model = "ok"\n'


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    server = ImageServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[GatewayProcess]:
    workdir = Path(tmp_path_factory.mktemp("vision"))
    process = GatewayProcess(workdir, config=catalog(upstream.base_url)).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh(upstream: ScriptedUpstream, images: ImageServer) -> None:
    upstream.clear()
    images.clear()


def ask(gateway: GatewayProcess, key: str, *parts: dict[str, Any], **fields: Any) -> httpx.Response:
    content = [{"type": "text", "text": "What is in this picture?"}, *parts]
    body = {"model": "vision", "messages": [{"role": "user", "content": content}], **fields}
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def image(url: str, detail: str | None = None) -> dict[str, Any]:
    spec = {"url": url} if detail is None else {"url": url, "detail": detail}
    return {"type": "image_url", "image_url": spec}


def forwarded(upstream: ScriptedUpstream) -> list[dict[str, Any]]:
    """The image parts the upstream received, in order."""
    [received] = upstream.received()
    return [
        part["image_url"]
        for message in received.body["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]


def decoded(data_uri: str) -> tuple[str, bytes, Image.Image]:
    header, payload = data_uri.split(",", 1)
    data = base64.b64decode(payload)
    return header, data, Image.open(BytesIO(data))


def test_a_url_reaches_the_provider_as_a_reencoded_data_uri(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, images: ImageServer
) -> None:
    url = images.url("/photo.jpg")
    response = ask(gateway, api_key, image(url, "high"))
    assert response.status_code == 200, response.text
    [spec] = forwarded(upstream)
    header, _, picture = decoded(spec["url"])
    assert header == "data:image/jpeg;base64"
    assert (picture.format, picture.size) == ("JPEG", (512, 384))  # downscaled to max_side
    assert spec["detail"] == "high"
    sent = json.dumps(upstream.received()[0].body)
    assert url not in sent and f"127.0.0.1:{images.port}" not in sent
    assert images.paths == ["/photo.jpg"]


def test_exif_and_gps_never_reach_the_provider(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, images: ImageServer
) -> None:
    assert CAMERA.encode() in GPS
    data_uri = "data:image/png;base64," + base64.b64encode(GPS).decode()  # mislabelled, too
    response = ask(gateway, api_key, image(images.url("/gps.jpg")), image(data_uri))
    assert response.status_code == 200, response.text
    for spec in forwarded(upstream):
        header, data, picture = decoded(spec["url"])
        assert header == "data:image/jpeg;base64"
        assert (
            not picture.getexif()
            and "exif" not in picture.info
            and "icc_profile" not in picture.info
        )
        assert CAMERA.encode() not in data and b"Exif" not in data


def test_transparency_keeps_a_png(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, images: ImageServer
) -> None:
    response = ask(gateway, api_key, image(images.url("/alpha.png")))
    assert response.status_code == 200, response.text
    [spec] = forwarded(upstream)
    header, _, picture = decoded(spec["url"])
    assert header == "data:image/png;base64"
    assert picture.mode == "RGBA"
    assert picture.getchannel("A").getextrema() == (0, 255)


def test_several_images_in_several_messages(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, images: ImageServer
) -> None:
    first = [image(images.url("/photo.jpg")), image(images.url("/redirect/2"))]
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Compare:"}, *first]},
        {"role": "assistant", "content": "Two gradients."},
        {"role": "user", "content": [image(images.url("/alpha.png"), "low")]},
    ]
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": "vision", "messages": messages, "stream": True},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    specs = forwarded(upstream)
    assert [decoded(s["url"])[0] for s in specs] == [
        "data:image/jpeg;base64",
        "data:image/jpeg;base64",
        "data:image/png;base64",
    ]
    assert specs[2]["detail"] == "low"
    assert sorted(images.paths) == [
        "/alpha.png",
        "/photo.jpg",
        "/photo.jpg",
        "/redirect/1",
        "/redirect/2",
    ]


def test_images_count_towards_the_context(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, images: ImageServer
) -> None:
    # 512 x 384 at high detail: 85 + 170 tokens; at low detail: 85. The window is 300 tokens.
    high = ask(
        gateway, api_key, image(images.url("/photo.jpg")), model="tiny-vision", max_tokens=40
    )
    error = high.json()["error"]
    assert (high.status_code, error["code"]) == (400, "INFERENCE_3207")
    assert error["details"]["input_tokens"] >= 255
    low = ask(
        gateway, api_key, image(images.url("/photo.jpg"), "low"), model="tiny-vision", max_tokens=40
    )
    assert low.status_code == 200, low.text


def _param(index: int = 1) -> str:
    return f"messages[0].content[{index}].image_url.url"


BAD_IMAGES = {
    "html-as-jpeg": ("/fake.jpg", "VALIDATION_4201"),
    "oversized-body": ("/big.jpg", "VALIDATION_4202"),
    "oversized-chunked": ("/big-chunked.jpg", "VALIDATION_4202"),
    "decompression-bomb": ("/bomb.png", "VALIDATION_4202"),
    "redirect-to-localhost": ("/to?url=http://localhost:{port}/photo.jpg", "VALIDATION_4203"),
    "slow-body": ("/slow.jpg", "VALIDATION_4204"),
    "not-found": ("/missing.jpg", "VALIDATION_4204"),
    "compressed": ("/gzip.jpg", "VALIDATION_4204"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES), ids=list(BAD_IMAGES))
def test_bad_image_urls(
    gateway: GatewayProcess,
    api_key: str,
    upstream: ScriptedUpstream,
    images: ImageServer,
    case: str,
) -> None:
    path, code = BAD_IMAGES[case]
    response = ask(gateway, api_key, image(images.url(path.format(port=images.port))))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, _param())
    assert error["details"]["parameter"] == _param()
    assert upstream.received() == []


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("data:image/png;base64,!!!notbase64", "VALIDATION_4201"),
        ("data:text/plain;base64,aGVsbG8=", "VALIDATION_4201"),
        (
            "data:image/png;base64," + base64.b64encode(b"GIF89a not really").decode(),
            "VALIDATION_4201",
        ),
        ("data:image/jpeg;base64," + "A" * 280_000, "VALIDATION_4202"),
        ("ftp://127.0.0.1/photo.jpg", "VALIDATION_4203"),
        ("http://169.254.169.254/latest/meta-data/", "VALIDATION_4203"),
        ("cat.jpg", "VALIDATION_4203"),
    ],
)
def test_bad_image_inputs(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, url: str, code: str
) -> None:
    response = ask(gateway, api_key, image(url))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert upstream.received() == []


def test_too_many_images(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, images: ImageServer
) -> None:
    response = ask(gateway, api_key, *[image(images.url("/photo.jpg"))] * 4)
    error = response.json()["error"]
    assert (response.status_code, error["code"], error["details"]["limit"]) == (
        400,
        "VALIDATION_4101",
        "max_images",
    )
    assert images.connections == 0


def test_a_model_without_vision_refuses_before_any_fetch(
    gateway: GatewayProcess, api_key: str, upstream: ScriptedUpstream, images: ImageServer
) -> None:
    response = ask(gateway, api_key, image(images.url("/photo.jpg")), model="text-only")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "INFERENCE_3201")
    assert images.connections == 0 and upstream.received() == []


def test_an_account_that_cannot_pay_is_refused_before_any_fetch(
    gateway: GatewayProcess, upstream: ScriptedUpstream, images: ImageServer
) -> None:
    broke = gateway.create_key(account="broke-vision")
    urls = [image(images.url("/photo.jpg")) for _ in range(3)]
    response = ask(gateway, broke, *urls, model="priced-vision")
    assert response.status_code == 402
    assert response.json()["error"]["code"] in ("BILLING_2001", "BILLING_2003")
    assert images.connections == 0 and upstream.received() == []


def test_the_default_policy_refuses_loopback_without_connecting(
    tmp_path: Path, upstream: ScriptedUpstream, images: ImageServer
) -> None:
    process = GatewayProcess(tmp_path, config=catalog(upstream.base_url, images="")).start()
    try:
        key = process.create_key()
        for host in ("127.0.0.1", "localhost"):
            response = ask(process, key, image(images.url("/photo.jpg", host=host)))
            error = response.json()["error"]
            assert (response.status_code, error["code"]) == (400, "VALIDATION_4203")
            assert error["details"]["reason"] == "loopback"
        assert images.connections == 0 and upstream.received() == []
    finally:
        process.stop()


def test_no_image_ended_in_a_server_error(gateway: GatewayProcess) -> None:
    """Runs last: every bad image above was a catalog error, never a 500 or a traceback."""
    log = gateway.log()
    assert '"status":500' not in log.replace(" ", "")
    assert "Traceback" not in log
