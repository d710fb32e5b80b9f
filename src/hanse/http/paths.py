"""Serves `/v1/chat/completions/` as `/v1/chat/completions`: a trailing slash is not another path.

Starlette would answer a 307 redirect (without `X-Request-ID`), which clients that build URLs from a
base URL ending in `/` then follow with a second request, or not at all for a POST.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class TrailingSlash:
    """Strips one or more trailing slashes from the path before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            stripped = path.rstrip("/") or "/"
            scope = {**scope, "path": stripped, "raw_path": stripped.encode()}
        await self._app(scope, receive, send)
