"""Property tests of the address checker: pure functions, no connection, no lookup.

The refused ranges are written out here again, independently of the code, and hypothesis draws
addresses inside and outside them, in every spelling a URL parser or `inet_aton` accepts.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from yarl import URL

from hanse.config.limits import ImagesConfig
from hanse.vision.addresses import AddressPolicy, literal_address, refusal_reason

REFUSED_V4 = {
    "0.0.0.0/8": "unspecified",
    "10.0.0.0/8": "private",
    "100.64.0.0/10": "shared (CGNAT)",
    "127.0.0.0/8": "loopback",
    "169.254.0.0/16": "link-local",
    "172.16.0.0/12": "private",
    "192.0.0.0/24": "reserved",
    "192.0.2.0/24": "documentation",
    "192.88.99.0/24": "reserved",
    "192.168.0.0/16": "private",
    "198.18.0.0/15": "benchmarking",
    "198.51.100.0/24": "documentation",
    "203.0.113.0/24": "documentation",
    "224.0.0.0/4": "multicast",
    "240.0.0.0/4": "reserved",
}
REFUSED_V6 = {
    "::1/128": "loopback",
    "fc00::/7": "unique-local",
    "fe80::/10": "link-local",
    "fec0::/10": "site-local",
    "ff00::/8": "multicast",
    "2001:db8::/32": "documentation",
}
_V4 = [IPv4Network(cidr) for cidr in REFUSED_V4]
DEFAULT = AddressPolicy()
# Reproducible in CI: the same examples every run, none stored on disk.
PROPERTY = settings(derandomize=True, database=None, max_examples=200)


def in_network(network: IPv4Network | IPv6Network) -> st.SearchStrategy[IPv4Address | IPv6Address]:
    first = int(network.network_address)
    return st.integers(first, first + network.num_addresses - 1).map(type(network.network_address))


refused_v4 = st.sampled_from(_V4).flatmap(in_network)
refused_v6 = st.sampled_from([IPv6Network(c) for c in REFUSED_V6]).flatmap(in_network)
public_v4 = (
    st.integers(0, 2**32 - 1).map(IPv4Address).filter(lambda a: not any(a in n for n in _V4))
)


def expected(address: IPv4Address) -> str:
    return next(REFUSED_V4[str(n)] for n in _V4 if address in n)


def spellings(address: IPv4Address) -> st.SearchStrategy[str]:
    """`address` as `inet_aton` reads it: 1 to 4 parts, each decimal, octal or hex."""
    value = int(address)
    octets = list(address.packed)

    def word(number: int, style: str) -> str:
        return {"dec": str(number), "oct": "0" + oct(number)[2:], "hex": hex(number)}[style]

    shapes = [
        [value],
        [octets[0], value & 0xFFFFFF],
        [octets[0], octets[1], value & 0xFFFF],
        octets,
    ]
    return st.tuples(
        st.sampled_from(shapes),
        st.lists(st.sampled_from(["dec", "oct", "hex"]), min_size=4, max_size=4),
        st.sampled_from(["", "."]),
        st.sampled_from([str.lower, str.upper]),
    ).map(lambda t: t[3](".".join(word(n, s) for n, s in zip(t[0], t[1], strict=False)) + t[2]))


def url_reason(url: str, policy: AddressPolicy = DEFAULT) -> str | None:
    refusal = policy.url_refusal(URL(url))
    return None if refusal is None else refusal.reason


# --- addresses --------------------------------------------------------------------------------------


@PROPERTY
@given(refused_v4)
def test_every_refused_ipv4_range(address: IPv4Address) -> None:
    assert refusal_reason(address) == expected(address)


@PROPERTY
@given(refused_v6)
def test_every_refused_ipv6_range(address: IPv6Address) -> None:
    reason = refusal_reason(address)
    assert reason is not None
    assert reason == next(r for c, r in REFUSED_V6.items() if address in ip_network(c)) or (
        reason.startswith("reserved")
    )


@PROPERTY
@given(public_v4)
def test_public_ipv4_is_allowed(address: IPv4Address) -> None:
    assert refusal_reason(address) is None
    assert url_reason(f"http://{address}/cat.jpg") is None


@PROPERTY
@given(refused_v4)
def test_ipv6_forms_embedding_a_refused_ipv4(address: IPv4Address) -> None:
    value = int(address)
    forms = {
        "IPv4-mapped": IPv6Address(0xFFFF << 32 | value),
        "IPv4-translated": IPv6Address(0xFFFF << 48 | value),
        "NAT64": IPv6Address(0x64FF9B << 96 | value),
        "6to4": IPv6Address(0x2002 << 112 | value << 80 | 1),
        "Teredo client": IPv6Address(0x20010000 << 96 | 0x08080808 << 64 | (~value & 0xFFFFFFFF)),
    }
    if value > 1:
        forms["IPv4-compatible"] = IPv6Address(value)
    for label, form in forms.items():
        assert refusal_reason(form) == f"{expected(address)} ({label})", form
        assert url_reason(f"http://[{form}]/") is not None


@PROPERTY
@given(public_v4)
def test_ipv6_mapped_public_addresses_are_not_refused_for_their_ipv4(address: IPv4Address) -> None:
    reason = refusal_reason(IPv6Address(0x64FF9B << 96 | int(address)))
    assert reason is None or "NAT64" not in reason


# --- spellings --------------------------------------------------------------------------------------


@PROPERTY
@given(refused_v4.flatmap(lambda a: st.tuples(st.just(a), spellings(a))))
def test_every_spelling_of_a_refused_address_is_refused(pair: tuple[IPv4Address, str]) -> None:
    address, spelled = pair
    assert literal_address(spelled) == address
    assert url_reason(f"http://{spelled}/x.png") == expected(address)
    assert url_reason(f"https://{spelled}:8443/x.png") == expected(address)


@PROPERTY
@given(public_v4.flatmap(lambda a: st.tuples(st.just(a), spellings(a))))
def test_public_addresses_must_be_written_plainly(pair: tuple[IPv4Address, str]) -> None:
    address, spelled = pair
    assume(spelled.rstrip(".") != str(address))
    assert url_reason(f"http://{spelled}/") == "IPv4 addresses must be written a.b.c.d"


@PROPERTY
@given(st.text(alphabet="0123456789abcdefxX.", min_size=1, max_size=24))
def test_literal_addresses_read_as_inet_aton_reads_them(host: str) -> None:
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return
    assert literal_address(host) == IPv4Address(packed)
    assert literal_address(host + ".") == IPv4Address(packed)


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST", "localhost.", "db.localhost", "a.b.LocalHost."]
)
def test_localhost_names_are_refused_by_name(host: str) -> None:
    assert url_reason(f"http://{host}/") == "loopback"


# --- URL tricks -------------------------------------------------------------------------------------


@PROPERTY
@given(refused_v4, st.sampled_from(["images.example.com", "8.8.8.8", "user:pw"]))
def test_userinfo_never_hides_the_real_host(address: IPv4Address, decoy: str) -> None:
    assert url_reason(f"http://{decoy}@{address}/") is not None
    assert url_reason(f"http://{address}#@{decoy}/") == expected(address)
    assert url_reason(f"http://{address}?@{decoy}/") == expected(address)
    assert url_reason(f"http://{address}/@{decoy}/") == expected(address)


@PROPERTY
@given(public_v4)
def test_credentials_are_refused_even_for_public_hosts(address: IPv4Address) -> None:
    assert url_reason(f"http://user:secret@{address}/") == "URLs with credentials are not fetched"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://8.8.8.8/x.png", "only http and https URLs are fetched"),
        ("file:///etc/passwd", "only http and https URLs are fetched"),
        ("http://[fe80::1%25eth0]/", "IPv6 zone identifiers are not fetched"),
        ("http://ex%41mple.com/", "the host name has characters a host name cannot have"),
        ("http://exa mple.com/", "the host name has characters a host name cannot have"),
        ("http:///x.png", "the URL has no host"),
        ("http://[::]/", "unspecified"),
        ("http://0/", "unspecified"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fd00:ec2::254]/", "unique-local"),
        ("http://images.example.com/cat.jpg", None),
        ("https://xn--mnchen-3ya.de/bild.jpg", None),
    ],
)
def test_url_checks(url: str, reason: str | None) -> None:
    assert url_reason(url) == reason


# --- the operator's allowances ----------------------------------------------------------------------


@PROPERTY
@given(refused_v4)
def test_an_allowed_cidr_admits_exactly_its_addresses(address: IPv4Address) -> None:
    network = IPv4Network(f"{address}/32")
    policy = AddressPolicy(allow_cidrs=[network])
    assert policy.address_refusal(address) is None
    assert policy.address_refusal(IPv6Address(0xFFFF << 32 | int(address))) is None
    neighbour = IPv4Address(int(address) ^ 1)
    assert (policy.address_refusal(neighbour) is None) == (refusal_reason(neighbour) is None)


def test_an_allowed_host_is_compared_normalised() -> None:
    policy = AddressPolicy(allow_hosts=["127.0.0.1:8080", "Images.Internal."])
    assert url_reason("http://127.0.0.1:8080/x.png", policy) is None
    assert url_reason("http://IMAGES.internal/x.png", policy) is None
    assert url_reason("https://images.internal./x.png", policy) is None
    assert url_reason("http://localhost/x.png", policy) == "loopback"
    assert url_reason("http://127.0.0.2/x.png", policy) == "loopback"


def test_an_allowed_host_is_trusted_on_its_ports_only() -> None:
    policy = AddressPolicy(
        allow_hosts=["127.0.0.1", "10.0.0.5:8443", "[fd00::1]:8080", "any.internal:*"]
    )
    assert url_reason("http://127.0.0.1/x.png", policy) is None  # the default ports
    assert url_reason("https://127.0.0.1/x.png", policy) is None
    assert url_reason("http://127.0.0.1:6379/x.png", policy) == "loopback"  # Redis: not trusted
    assert url_reason("https://10.0.0.5:8443/x.png", policy) is None
    assert url_reason("https://10.0.0.5/x.png", policy) == "private"
    assert url_reason("http://[fd00::1]:8080/x.png", policy) is None
    assert url_reason("http://[fd00::1]:8081/x.png", policy) is not None
    assert url_reason("http://any.internal:5432/x.png", policy) is None


@pytest.mark.parametrize("entry", ["host:0", "host:65536", "host:http", "[::1]x", ":80"])
def test_a_malformed_allowance_fails_at_start_up(entry: str) -> None:
    with pytest.raises(ValueError, match=r"port|host|address"):
        ImagesConfig(allow_hosts=(entry,))
