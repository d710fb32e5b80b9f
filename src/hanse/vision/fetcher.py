"""The safe fetcher: the one way a URL from a request is fetched.

For each hop, the URL is checked (scheme, credentials, host spelling), its host resolved once and
every address checked; the connection then goes to those addresses only, through a resolver pinned
to them, so no second lookup can swap in another address (DNS rebinding). TLS still verifies the
URL's own host name. Redirects are followed by hand, each hop checked again; the body is counted
while it is read, whatever Content-Length said.
"""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address
from typing import NoReturn

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from hanse.config.limits import ImagesConfig
from hanse.errors import IMAGE_FETCH_FAILED, IMAGE_FETCH_REFUSED, IMAGE_TOO_LARGE, HanseError
from hanse.vision.addresses import Address, AddressPolicy, Refusal, literal_address

_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024
_HEADERS = {
    "User-Agent": "Hanse-image-fetcher/1",
    "Accept": "image/*",
    # Compressed bodies are refused: a small gzip body can inflate past any cap before it is counted.
    "Accept-Encoding": "identity",
}


class PinnedResolver(AbstractResolver):
    """Answers only for the host just checked, with the addresses just checked."""

    def __init__(self) -> None:
        self.host: str | None = None
        self.addresses: list[Address] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self.host or not self.addresses:
            raise OSError(f"{host} was not checked by the safe fetcher")
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        """Nothing to release: no lookup ever happens here."""


def refused(refusal: Refusal) -> HanseError:
    return HanseError(
        IMAGE_FETCH_REFUSED,
        f"The image URL is refused: {refusal.reason}.",
        details={"reason": refusal.reason},
    )


def _failed(reason: str) -> NoReturn:
    raise HanseError(
        IMAGE_FETCH_FAILED,
        f"The image URL could not be fetched: {reason}.",
        details={"reason": reason},
    )


def too_large(max_bytes: int) -> HanseError:
    return HanseError(
        IMAGE_TOO_LARGE,
        f"The image is larger than {max_bytes} bytes.",
        details={"max_bytes": max_bytes},
    )


class SafeFetcher:
    """Fetches image URLs under the `[images]` policy, at most `max_bytes` each."""

    def __init__(self, config: ImagesConfig, max_bytes: int) -> None:
        self._config = config
        self._max_bytes = max_bytes
        self._policy = AddressPolicy(config.allow_hosts, config.allow_cidrs)

    async def fetch(self, url: str) -> bytes:
        """The body of `url` (after redirects): VALIDATION_4202/4203/4204 otherwise."""
        try:
            target = URL(url)
        except ValueError:
            raise refused(Refusal("not a valid URL")) from None
        try:
            async with asyncio.timeout(self._config.timeout_s):
                return await self._follow(target)
        except TimeoutError:
            _failed("timed out")
        except aiohttp.ClientError as exc:
            _failed(_describe(exc))

    async def _follow(self, target: URL) -> bytes:
        resolver = PinnedResolver()
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._config.connect_timeout_s,
            sock_read=self._config.read_timeout_s,
        )
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False),
            timeout=timeout,
            headers=_HEADERS,
            auto_decompress=False,
            trust_env=False,  # a proxy from the environment would connect on our behalf, unchecked
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as session:
            for _ in range(self._config.max_redirects + 1):
                await self._pin(target, resolver)
                async with session.get(target, allow_redirects=False) as response:
                    if response.status not in _REDIRECTS:
                        return await self._body(response)
                    location = response.headers.get("Location")
                    if not location:
                        _failed(f"a {response.status} redirect without a Location")
                    try:
                        target = target.join(URL(location))
                    except ValueError:
                        raise refused(Refusal("the redirect is not a valid URL")) from None
        _failed(f"more than {self._config.max_redirects} redirects")

    async def _pin(self, target: URL, resolver: PinnedResolver) -> None:
        """Check the hop's URL and every address its host resolves to; pin the resolver to them."""
        refusal = self._policy.url_refusal(target)
        if refusal is not None:
            raise refused(refusal)
        host = target.raw_host or ""
        literal = literal_address(host)
        addresses = [literal] if literal is not None else await self._resolve(host, target.port)
        if not self._policy.host_allowed(host, target.port):
            for address in addresses:
                refusal = self._policy.address_refusal(address)
                if refusal is not None:
                    raise refused(refusal)
        resolver.host, resolver.addresses = host, addresses

    async def _resolve(self, host: str, port: int | None) -> list[Address]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._config.connect_timeout_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            _failed("the host name does not resolve")
        addresses: list[Address] = []
        for info in infos:
            address = ip_address(str(info[4][0]).split("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            _failed("the host name does not resolve")
        return addresses

    async def _body(self, response: aiohttp.ClientResponse) -> bytes:
        if response.status != 200:
            _failed(f"the server answered {response.status}")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            _failed(f"a compressed answer ({encoding})")
        declared = response.content_length
        if declared is not None and declared > self._max_bytes:
            raise too_large(self._max_bytes)
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > self._max_bytes:
                raise too_large(self._max_bytes)
        return bytes(body)


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "cannot connect"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the body was cut"
    return "the connection failed"
