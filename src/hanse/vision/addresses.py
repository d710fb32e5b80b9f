"""Which hosts and addresses the safe fetcher may reach: pure functions, no I/O.

A URL's host is refused by name (`localhost`), by spelling (IPv4 numbers written in decimal, octal
or hex, as `inet_aton` would read them), or by address: loopback, private, link-local, CGNAT,
multicast, reserved, unspecified, and any IPv6 form that embeds one of those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from yarl import URL

from hanse.config.hosts import host_allowance, normal_host

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# Checked in order; the first match names the reason (IPv6's `::1` before the `::/96` block).
REFUSED_NETWORKS: tuple[tuple[str, Network], ...] = tuple(
    (reason, ip_network(cidr))
    for reason, cidr in (
        ("unspecified", "0.0.0.0/8"),
        ("private", "10.0.0.0/8"),
        ("shared (CGNAT)", "100.64.0.0/10"),
        ("loopback", "127.0.0.0/8"),
        ("link-local", "169.254.0.0/16"),
        ("private", "172.16.0.0/12"),
        ("reserved", "192.0.0.0/24"),
        ("documentation", "192.0.2.0/24"),
        ("reserved", "192.88.99.0/24"),
        ("private", "192.168.0.0/16"),
        ("benchmarking", "198.18.0.0/15"),
        ("documentation", "198.51.100.0/24"),
        ("documentation", "203.0.113.0/24"),
        ("multicast", "224.0.0.0/4"),
        ("reserved", "240.0.0.0/4"),
        ("unspecified", "::/128"),
        ("loopback", "::1/128"),
        ("reserved (IPv4-compatible)", "::/96"),
        ("reserved (NAT64 local use)", "64:ff9b:1::/48"),
        ("reserved (discard)", "100::/64"),
        ("reserved (IETF)", "2001::/23"),
        ("documentation", "2001:db8::/32"),
        ("unique-local", "fc00::/7"),
        ("link-local", "fe80::/10"),
        ("site-local", "fec0::/10"),
        ("multicast", "ff00::/8"),
    )
)
_LOW_32 = 0xFFFFFFFF
_EMBEDDING: tuple[tuple[str, Network], ...] = (
    ("IPv4-mapped", ip_network("::ffff:0:0/96")),
    ("IPv4-translated", ip_network("::ffff:0:0:0/96")),
    ("IPv4-compatible", ip_network("::/96")),
    ("NAT64", ip_network("64:ff9b::/96")),
)
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a URL may not be fetched (safe to show: it never names a resolved address)."""

    reason: str


def refusal_reason(address: Address) -> str | None:
    """Why `address` may not be connected to; None for a globally routable address."""
    if isinstance(address, IPv6Address):
        for label, embedded in _embedded_ipv4(address):
            reason = refusal_reason(embedded)
            if reason is not None:
                return f"{reason} ({label})"
    for reason, network in REFUSED_NETWORKS:
        if address in network:
            return reason
    return None if address.is_global else "not globally routable"


def _embedded_ipv4(address: IPv6Address) -> Iterable[tuple[str, IPv4Address]]:
    for label, network in _EMBEDDING:
        if address in network and int(address) > 1:
            yield label, IPv4Address(int(address) & _LOW_32)
    if address.sixtofour is not None:
        yield "6to4", address.sixtofour
    if address.teredo is not None:
        server, client = address.teredo
        yield "Teredo server", server
        yield "Teredo client", client


def literal_address(host: str) -> Address | None:
    """The address a host names by itself (IPv6, or IPv4 in any `inet_aton` spelling), else None."""
    host = normal_host(host)
    if ":" in host:
        try:
            return IPv6Address(host)
        except ValueError:
            return None
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_number(part) for part in parts]
    if any(n is None for n in numbers):
        return None
    *leading, last = [n for n in numbers if n is not None]
    # `a.b.c.d`, `a.b.cd` (last part 16 bits), `a.bcd` (24 bits), `abcd` (32 bits).
    if any(n > 0xFF for n in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    value = last
    for index, byte in enumerate(leading):
        value |= byte << (8 * (3 - index))
    return IPv4Address(value)


def _number(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    try:
        return int(digits, base) if digits.isalnum() and digits.isascii() else None
    except ValueError:
        return None


class AddressPolicy:
    """The fetcher's rules, with the operator's allowances (`[images] allow_hosts/allow_cidrs`)."""

    def __init__(self, allow_hosts: Iterable[str] = (), allow_cidrs: Iterable[Network] = ()):
        self._hosts: dict[str, frozenset[int] | None] = {}
        for entry in allow_hosts:
            host, ports = host_allowance(entry)
            known = self._hosts.get(host, frozenset())
            self._hosts[host] = None if ports is None or known is None else known | ports
        self._networks = tuple(allow_cidrs)

    def host_allowed(self, host: str, port: int | None) -> bool:
        """The operator trusts this host name (or literal) on this port, whatever it resolves to."""
        normal = normal_host(host)
        if normal not in self._hosts:
            return False
        ports = self._hosts[normal]
        return ports is None or port in ports

    def address_refusal(self, address: Address) -> Refusal | None:
        """Why the fetcher may not connect to `address`, unless an allowed CIDR covers it."""
        mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
        if any(a in n for n in self._networks for a in (address, mapped) if a is not None):
            return None
        reason = refusal_reason(address)
        return None if reason is None else Refusal(reason)

    def url_refusal(self, url: URL) -> Refusal | None:
        """What is wrong with a URL before any lookup: scheme, credentials, host spelling."""
        if url.scheme not in ("http", "https"):
            return Refusal("only http and https URLs are fetched")
        if url.user is not None or url.password is not None:
            return Refusal("URLs with credentials are not fetched")
        raw = url.raw_host
        if not raw:
            return Refusal("the URL has no host")
        host = normal_host(raw)
        if self.host_allowed(host, url.port):
            return None
        if ":" in host and "%" in host:
            return Refusal("IPv6 zone identifiers are not fetched")
        address = literal_address(host)
        if address is not None:
            refused = self.address_refusal(address)
            if refused is not None:
                return refused
            if ":" not in host and str(address) != host:
                return Refusal("IPv4 addresses must be written a.b.c.d")
            return None
        if host == "localhost" or host.endswith(".localhost"):
            return Refusal("loopback")
        if not _HOST_NAME.match(host):
            return Refusal("the host name has characters a host name cannot have")
        return None
