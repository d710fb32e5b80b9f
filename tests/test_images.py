"""Pure helpers of the vision and structured-output paths: re-encoding, image tokens, answer checks."""

from __future__ import annotations

from io import BytesIO

import pytest
from PIL import Image

from hanse.domain import ResponseFormat
from hanse.errors import HanseError
from hanse.structured import check
from hanse.tokens import estimate_image_tokens
from hanse.vision.images import EncodedImage, reencode
from tests.imageserver import ALPHA, BOMB, CAMERA, GPS, PHOTO, photo_jpeg

MAX_PIXELS = 40_000_000


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def clean(data: bytes) -> EncodedImage:
    return reencode(data, max_pixels=MAX_PIXELS, max_side=2048)


def opened(data: bytes) -> Image.Image:
    return Image.open(BytesIO(data))


def test_a_photo_stays_a_clean_jpeg() -> None:
    image = clean(GPS)
    assert (image.mime, image.width, image.height) == ("image/jpeg", 320, 240)
    assert CAMERA.encode() not in image.data and not opened(image.data).getexif()
    assert image.data_uri().startswith("data:image/jpeg;base64,/9j/")


def test_the_exif_orientation_is_applied_before_it_is_dropped() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image = clean(photo_jpeg((200, 100), exif.tobytes()))
    assert (image.width, image.height) == (100, 200)
    assert not opened(image.data).getexif()


def test_transparency_decides_png() -> None:
    assert clean(ALPHA).mime == "image/png"
    opaque = encoded(Image.new("RGBA", (8, 8), (1, 2, 3, 255)), "PNG")
    assert clean(opaque).mime == "image/jpeg"
    palette = Image.new("P", (8, 8), 0)
    palette.info["transparency"] = 0
    assert clean(encoded(palette, "GIF", transparency=0)).mime == "image/png"


@pytest.mark.parametrize(
    ("mode", "fmt", "out_mode"),
    [("L", "PNG", "L"), ("CMYK", "JPEG", "RGB"), ("RGB", "WEBP", "RGB"), ("I;16", "PNG", "L")],
)
def test_modes_and_formats(mode: str, fmt: str, out_mode: str) -> None:
    image = clean(encoded(Image.new(mode, (16, 12)), fmt))
    assert image.mime == "image/jpeg"
    assert opened(image.data).mode == out_mode


def test_downscaling_keeps_the_aspect_ratio() -> None:
    image = reencode(PHOTO, max_pixels=10**7, max_side=320)
    assert (image.width, image.height) == (320, 240)
    assert reencode(PHOTO, max_pixels=10**7, max_side=0).width == 640


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<html>not an image</html>",
        PHOTO[: len(PHOTO) // 2],
        encoded(Image.new("RGB", (4, 4)), "BMP"),
        encoded(Image.new("RGB", (4, 4)), "TIFF"),
    ],
    ids=["empty", "html", "truncated", "bmp", "tiff"],
)
def test_what_is_not_an_accepted_image(data: bytes) -> None:
    with pytest.raises(HanseError) as caught:
        clean(data)
    assert caught.value.error.code == "VALIDATION_4201"


def test_pixels_are_counted_from_the_header() -> None:
    with pytest.raises(HanseError) as caught:
        clean(BOMB)
    assert caught.value.error.code == "VALIDATION_4202"
    assert caught.value.details == {"max_pixels": MAX_PIXELS}


@pytest.mark.parametrize(
    ("width", "height", "detail", "tokens"),
    [
        (1024, 1024, "high", 765),
        (2048, 4096, None, 1105),
        (512, 512, "auto", 255),
        (4000, 4000, "low", 85),
        (1, 1, None, 255),
    ],
)
def test_image_tokens_follow_openai(
    width: int, height: int, detail: str | None, tokens: int
) -> None:
    assert estimate_image_tokens(width, height, detail) == tokens


SCHEMA = ResponseFormat(
    "json_schema",
    name="city",
    schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
)


@pytest.mark.parametrize(
    ("content", "fmt", "text", "problem"),
    [
        ('{"n": 1}', SCHEMA, '{"n": 1}', None),
        ('```json\n{"n": 1}\n```', SCHEMA, '{"n": 1}', None),
        ('  ```\n{"n": 1}```  ', SCHEMA, '{"n": 1}', None),
        ('{"n": "one"}', SCHEMA, '{"n": "one"}', "at `$.n`: 'one' is not of type 'integer'"),
        ("{}", SCHEMA, "{}", "at `$`: 'n' is a required property"),
        ("[1]", ResponseFormat("json_object"), "[1]", "the answer is not a JSON object"),
        (None, SCHEMA, None, "the answer is empty"),
    ],
)
def test_answer_checks(
    content: str | None, fmt: ResponseFormat, text: str | None, problem: str | None
) -> None:
    assert check(content, fmt) == (text, problem)


def test_prose_is_not_json() -> None:
    text, problem = check("Hamburg.", SCHEMA)
    assert (
        text == "Hamburg."
        and problem is not None
        and problem.startswith("the answer is not valid JSON")
    )
