"""Caps request bodies at `[limits] max_body_bytes`, counted as they arrive (VALIDATION_4130).

An ASGI middleware around every route: a Content-Length over the cap is refused before any byte is
read, and a body without one (chunked) is refused as soon as it passes the cap. The error rises from
the body read, so the route's own error handling answers it like any other catalog error.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hanse.errors import BODY_TOO_LARGE, HanseError


class BodyLimit:
    """Refuses bodies over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = _content_length(scope)
        received = 0

        async def limited() -> Message:
            nonlocal received
            if declared is not None and declared > self._max:
                raise self._error()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    raise self._error()
            return message

        await self._app(scope, limited, send)

    def _error(self) -> HanseError:
        return HanseError(
            BODY_TOO_LARGE,
            f"The request body is over {self._max} bytes.",
            details={"max_bytes": self._max},
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
