"""Decode, check and re-encode one image: nothing but its pixels reaches a provider.

Pillow decides what the bytes are (never a Content-Type or a data URI's label), only the formats
vision models take are opened, the pixel count is checked from the header before decoding (so a
decompression bomb is refused unread), and the re-encoded image carries no metadata (EXIF, GPS,
XMP, ICC, text chunks): JPEG for photos, PNG where transparency matters.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageOps, UnidentifiedImageError

from hanse.errors import IMAGE_TOO_LARGE, NOT_AN_IMAGE, HanseError

FORMATS = ("JPEG", "PNG", "GIF", "WEBP")
JPEG_QUALITY = 90
# Whatever Pillow raises on a broken or hostile file: it is not an image we can use.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError)


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """A re-encoded image and its size in pixels."""

    mime: str
    data: bytes
    width: int
    height: int

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def reencode(data: bytes, *, max_pixels: int, max_side: int) -> EncodedImage:
    """The image in `data`, upright, at most `max_side` pixels on its longest side (0: any)."""
    try:
        with Image.open(BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise _too_many_pixels(width, height, max_pixels)
            if max_side:
                image.draft("RGB", (max_side, max_side))  # JPEG decodes at a reduced scale
            image.load()
            return _encode(image, max_side)
    except Image.DecompressionBombError:
        raise _too_many_pixels(0, 0, max_pixels) from None
    except _DECODE_ERRORS as exc:
        raise HanseError(
            NOT_AN_IMAGE,
            "The image input is not a JPEG, PNG, GIF or WebP image that can be decoded.",
            details={"reason": type(exc).__name__},
        ) from None


def _encode(image: Image.Image, max_side: int) -> EncodedImage:
    upright = ImageOps.exif_transpose(image)
    transparent = _has_transparency(upright)
    if transparent:
        clean = upright.convert("RGBA")
    else:
        clean = upright.convert("L" if upright.mode in ("1", "L", "I", "I;16", "F") else "RGB")
    if max_side and max(clean.size) > max_side:
        clean.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # `convert` copies `info` (EXIF, ICC profile, XMP, comments); savers read some of it from there.
    clean.info.clear()
    out = BytesIO()
    if transparent:
        clean.save(out, "PNG")
        mime = "image/png"
    else:
        clean.save(out, "JPEG", quality=JPEG_QUALITY)
        mime = "image/jpeg"
    return EncodedImage(mime, out.getvalue(), clean.width, clean.height)


def _has_transparency(image: Image.Image) -> bool:
    """True when some pixel is not fully opaque (an alpha channel of all 255 does not matter)."""
    if not image.has_transparency_data:
        return False
    extrema = image.convert("RGBA").getchannel("A").getextrema()
    return isinstance(extrema[0], (int, float)) and extrema[0] < 255


def _too_many_pixels(width: int, height: int, max_pixels: int) -> HanseError:
    size = f" ({width}x{height})" if width else ""
    return HanseError(
        IMAGE_TOO_LARGE,
        f"The image has more than {max_pixels} pixels{size}.",
        details={"max_pixels": max_pixels},
    )
