"""The pipeline's "prepare content" step: every image part becomes a re-encoded `data:` URI.

URLs are fetched through the safe fetcher; data URIs from the client are decoded the same way. Each
part's `url` is replaced in place, so a provider never sees the client's URL or original bytes, and
the request learns its images' token estimate.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from hanse.config.limits import ImagesConfig, LimitsConfig
from hanse.domain import InferenceRequest
from hanse.errors import NOT_AN_IMAGE, HanseError
from hanse.tokens import estimate_image_tokens
from hanse.vision.fetcher import SafeFetcher, too_large
from hanse.vision.images import EncodedImage, reencode

_DATA_URI = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)
# OpenAI's low detail sees the image at 512 x 512 at most: nothing larger need travel.
_LOW_DETAIL_SIDE = 512
# Images decoded at once in this process: decoding is CPU- and memory-heavy.
_DECODERS = 2


@dataclass(frozen=True, slots=True)
class ImagePart:
    """One image part of a request, and where it is (`messages[i].content[j].image_url.url`)."""

    param: str
    spec: dict[str, Any]


def image_parts(messages: list[dict[str, Any]]) -> list[ImagePart]:
    """The request's image parts, in order."""
    found = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if part.get("type") == "image_url":
                found.append(
                    ImagePart(f"messages[{i}].content[{j}].image_url.url", part["image_url"])
                )
    return found


class ImageInputs:
    """Fetches, checks and re-encodes the image parts of requests."""

    def __init__(self, limits: LimitsConfig, config: ImagesConfig) -> None:
        self._limits = limits
        self._config = config
        self._fetcher = SafeFetcher(config, limits.max_image_bytes)
        self._decoding = asyncio.Semaphore(_DECODERS)

    async def prepare(self, request: InferenceRequest) -> None:
        """Replace each image part's URL with its re-encoded data URI; count its tokens."""
        parts = image_parts(request.messages)
        if not parts:
            return
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._one(part)) for part in parts]
        except* HanseError as errors:
            raise errors.exceptions[0] from None
        for part, task in zip(parts, tasks, strict=True):
            image = task.result()
            part.spec["url"] = image.data_uri()
            request.image_tokens += estimate_image_tokens(
                image.width, image.height, part.spec.get("detail")
            )

    async def _one(self, part: ImagePart) -> EncodedImage:
        url: str = part.spec["url"]
        try:
            data = _data_uri_bytes(url, self._limits.max_image_bytes)
            if data is None:
                data = await self._fetcher.fetch(url)
            side = self._config.max_side
            if part.spec.get("detail") == "low":
                side = min(side, _LOW_DETAIL_SIDE) if side else _LOW_DETAIL_SIDE
            async with self._decoding:
                return await asyncio.to_thread(
                    reencode, data, max_pixels=self._limits.max_image_pixels, max_side=side
                )
        except HanseError as exc:
            raise HanseError(
                exc.error,
                exc.message,
                param=part.param,
                details={"parameter": part.param, **exc.details},
            ) from None


def _data_uri_bytes(url: str, max_bytes: int) -> bytes | None:
    """The bytes of a `data:image/...;base64,` URI; None for anything that is not a data URI."""
    if url[:5].lower() != "data:":
        return None
    header = _DATA_URI.match(url)
    if header is None:
        raise HanseError(
            NOT_AN_IMAGE,
            "A data URI image must be `data:image/<type>;base64,<data>`.",
            details={"reason": "not a base64 image data URI"},
        )
    payload = url[header.end() :]
    if len(payload) // 4 * 3 > max_bytes + 2:
        raise too_large(max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise HanseError(
            NOT_AN_IMAGE,
            "The data URI is not valid base64.",
            details={"reason": "invalid base64"},
        ) from None
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    return data
