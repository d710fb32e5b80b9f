"""Host names as the operator writes them in `[images] allow_hosts`, and as they are compared.

Pure string functions, shared by the catalog's validation (config/limits.py) and the safe fetcher's
rules (vision/addresses.py): config stays a leaf that imports nothing of the request's way.
"""

from __future__ import annotations


def normal_host(host: str) -> str:
    """A host as it is compared: lower case, IPv6 brackets and one trailing dot removed."""
    return host.strip("[]").lower().removesuffix(".")


DEFAULT_PORTS = frozenset({80, 443})
ANY_PORT = "*"


def host_allowance(entry: str) -> tuple[str, frozenset[int] | None]:
    """An `allow_hosts` entry as (normal host, its ports; None: every port).

    `host` allows the default ports (80, 443), `host:8443` that port, `host:*` every port; an
    IPv6 literal takes a port in brackets (`[fd00::1]:8080`). ValueError when it is malformed."""
    host, port = entry, ""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"`{entry}` is not `[address]` or `[address]:port`")
        port = rest[1:]
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    host = normal_host(host)
    if not host:
        raise ValueError(f"`{entry}` names no host")
    if port == ANY_PORT:
        return host, None
    if not port:
        return host, DEFAULT_PORTS
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"`{entry}` has a port that is not 1-65535 or `*`")
    return host, frozenset({int(port)})
