"""The short way in for the inference endpoints: a POST to one of them goes straight to its
endpoint, everything else through Starlette's middleware and router.

On the hot route those layers (two error middlewares, the router's matching, a `send` wrapper in
each) did nothing the endpoint does not do itself (it answers every error, in its face's shape),
and cost a worker several percent of its CPU (docs/benchmarks.md). What they would do for these
paths is done here: the app in the scope, a Starlette `Request`, the response sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class HotPaths:
    """POST `path` -> `endpoints[path]`; anything else -> `app`."""

    def __init__(self, app: ASGIApp, endpoints: Mapping[str, Endpoint]) -> None:
        self._app = app
        self._endpoints = dict(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._endpoints.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self._app  # as Starlette sets it: `request.app.state`
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)
