"""The SSRF guard: host grammar, the host allowlist, forbidden addresses in every spelling."""
from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming import netpolicy
from streaming.config import PipelineConfig
from streaming.errors import AddressNotAllowed, ObjectNotFound, UriNotAllowed
from streaming.netpolicy import Authority, forbidden_reason, parse_authority, resolve_checked

FORBIDDEN = [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "private"), ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("172.31.255.255", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("169.254.0.1", "link-local"),
    ("100.64.0.1", "shared"), ("100.127.255.254", "shared"), ("192.0.0.8", "special-purpose"),
    ("192.0.2.1", "private"), ("198.18.0.1", "private"), ("198.51.100.7", "private"), ("203.0.113.9", "private"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("240.0.0.1", "private"),
    ("255.255.255.255", "private"),
    ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"), ("fc00::1", "private"),
    ("fd12:3456::1", "private"), ("ff02::1", "multicast"), ("fec0::1", "site-local"), ("2001:db8::1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"), ("::ffff:10.1.2.3", "private"),
    ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
    ("64:ff9b::7f00:1", "loopback"),
    ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
    ("2002:7f00:1::", "loopback"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "private"),  # Teredo
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]


@pytest.mark.parametrize("address, reason", FORBIDDEN)
def test_forbidden_addresses(address, reason):
    assert reason in (forbidden_reason(ipaddress.ip_address(address)) or "")


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("netloc, host, port", [
    ("example.com", "example.com", 80), ("EXAMPLE.com.", "example.com", 80), ("a.b-c.example:8080", "a.b-c.example", 8080),
    ("93.184.216.34", "93.184.216.34", 80), ("[2606:4700::1111]:443", "2606:4700::1111", 443),
    ("[::FFFF:7f00:1]", "::ffff:7f00:1", 80), ("xn--bcher-kva.example", "xn--bcher-kva.example", 80),
])
def test_authority_grammar_accepts(netloc, host, port):
    authority = parse_authority(netloc, "http")
    assert (authority.host, authority.port) == (host, port)


@pytest.mark.parametrize("netloc, reason", [
    ("user:pa55word@example.com", "user info"), ("@example.com", "user info"),
    ("example.com\\@evil.com", "user info"), ("example.com\\evil.com", "backslash"), ("exa mple.com", "whitespace"), ("[fe80::1%25eth0]", "'%'"),
    ("", "no host"), (":80", "no host"), ("example.com:0", "invalid port"), ("example.com:65536", "invalid port"),
    ("example.com:+80", "invalid port"), ("example.com:80:80", "invalid port"), ("[::1", "unterminated"),
    ("[::1]x", "after the IPv6"), ("[127.0.0.1]", "invalid IPv6"), ("bücher.example", "ASCII"),
    ("-bad.example", "invalid host"), ("a..b", "invalid host"), ("a_b.example:80" + "0" * 5, "invalid port"),
    # numeric spellings C resolvers accept as IPv4 (all of them 127.0.0.1 or 169.254.169.254)
    ("2130706433", "canonical"), ("0x7f000001", "canonical"), ("0x7f.1", "canonical"), ("0177.0.0.1", "canonical"),
    ("127.1", "canonical"), ("127.0.1", "canonical"), ("017700000001", "canonical"), ("127.000.000.001", "canonical"),
    ("0x7f.0x0.0x0.0x1", "canonical"), ("2852039166", "canonical"), ("0xa9fea9fe", "canonical"),
    ("169.254.43518", "canonical"), ("foo.123", "canonical"),
])
def test_authority_grammar_refuses(netloc, reason):
    with pytest.raises(UriNotAllowed, match=reason) as caught:
        parse_authority(netloc, "http")
    assert "pa55word" not in caught.value.message


@pytest.mark.parametrize("pattern, netloc, scheme, allowed", [
    ("images.example.com", "images.example.com", "https", True),
    ("images.example.com", "images.example.com:443", "https", True),
    ("images.example.com", "images.example.com:8443", "https", False),  # only the default port
    ("images.example.com:8443", "images.example.com:8443", "https", True),
    ("images.example.com:*", "images.example.com:22", "http", True),
    ("images.example.com", "evil-images.example.com", "https", False),
    ("images.example.com", "images.example.com.evil.net", "https", False),
    ("*.example.com", "a.b.example.com", "https", True),
    ("*.example.com", "example.com", "https", False),
    ("*.example.com", "badexample.com", "https", False),
    ("*", "anything.example", "http", True),
    ("*", "anything.example:8080", "http", False),
    ("*:*", "anything.example:8080", "http", True),
    ("127.0.0.1:*", "127.0.0.1:9", "http", True),
    ("[::1]:8080", "[::1]:8080", "http", True),
])
def test_host_patterns(pattern, netloc, scheme, allowed):
    assert netpolicy.host_allowed(parse_authority(netloc, scheme), scheme, [pattern]) is allowed


@pytest.mark.parametrize("field, value", [
    ("allowed_hosts", ("exa mple.com",)), ("allowed_hosts", ("example.com:99999",)), ("allowed_hosts", ("a@b",)),
    ("http_trusted_networks", ("10.0.0.0/33",)), ("http_trusted_networks", ("not-a-net",)),
    ("allowed_s3_prefixes", ("bucket-without-slash",)), ("max_redirects", -1), ("max_decode_ms", 0),
])
def test_bad_policy_config_is_refused(field, value):
    with pytest.raises(ValueError):
        PipelineConfig(**{field: value})


def fake_resolver(table: dict[str, list[str]]):
    calls: list[str] = []

    def resolve(host, port, type=0, proto=0, **_):  # noqa: A002 - getaddrinfo's names
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port, 0, 0) if ":" in a else (a, port)) for a in table[host]]
    resolve.calls = calls
    return resolve


@pytest.mark.parametrize("addresses", [
    ["10.0.0.5"], ["169.254.169.254"], ["127.0.0.1"], ["::1"], ["::ffff:127.0.0.1"], ["fd00::1"],
    ["93.184.216.34", "127.0.0.1"],  # one bad address is enough: the client might pick it
    ["2606:4700::1111", "fe80::1"],
])
def test_names_resolving_to_forbidden_addresses_are_refused(addresses):
    resolver = fake_resolver({"images.example.com": addresses})
    with pytest.raises(AddressNotAllowed, match="resolves to a forbidden address") as caught:
        resolve_checked(parse_authority("images.example.com", "https"), (), resolver)
    assert all(a not in caught.value.message for a in addresses)  # internal DNS stays internal


def test_resolution_returns_checked_addresses_in_order():
    resolver = fake_resolver({"cdn.example": ["93.184.216.34", "2606:4700::1111", "93.184.216.34"]})
    assert resolve_checked(parse_authority("cdn.example", "https"), (), resolver) == [
        "93.184.216.34", "2606:4700::1111"]


def test_ip_literals_skip_dns():
    resolver = fake_resolver({})
    assert resolve_checked(parse_authority("93.184.216.34", "http"), (), resolver) == ["93.184.216.34"]
    with pytest.raises(AddressNotAllowed):
        resolve_checked(parse_authority("[::ffff:a9fe:a9fe]", "http"), (), resolver)
    assert resolver.calls == []


def test_trusted_networks_exempt_exactly_their_addresses():
    networks = netpolicy.parse_networks(("127.0.0.1/32", "10.20.0.0/16"))
    resolver = fake_resolver({"internal.example": ["10.20.3.4"], "other.example": ["10.21.0.1"]})
    assert resolve_checked(Authority("127.0.0.1", 80, ipaddress.ip_address("127.0.0.1")), networks) == ["127.0.0.1"]
    assert resolve_checked(parse_authority("[::ffff:127.0.0.1]", "http"), networks) == ["::ffff:7f00:1"]
    assert resolve_checked(parse_authority("internal.example", "http"), networks, resolver) == ["10.20.3.4"]
    for netloc in ("127.0.0.2", "other.example", "[::1]"):
        with pytest.raises(AddressNotAllowed):
            resolve_checked(parse_authority(netloc, "http"), networks, resolver)


def test_unknown_names_are_object_not_found():
    with pytest.raises(ObjectNotFound, match="does not resolve"):
        resolve_checked(parse_authority("nowhere.example", "http"), (), fake_resolver({}))


def test_scoped_ipv6_answers_are_refused():
    def resolver(host, port, **_):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1111", port, 0, 3))]
    with pytest.raises(AddressNotAllowed, match="scoped"):
        resolve_checked(parse_authority("x.example", "http"), (), resolver)


# -- properties --------------------------------------------------------------------------
_FORBIDDEN_V4 = st.one_of(*[st.integers(int(n.network_address), int(n.broadcast_address)) for n in map(
    ipaddress.ip_network, ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
                           "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4"])])


def _spellings(value: int) -> list[str]:
    """Ways C's inet_aton (and so many HTTP clients) read as this IPv4 address."""
    a, b, c, d = value.to_bytes(4, "big")
    return [str(value), hex(value), f"0{value:o}", f"{a}.{(b << 16) | (c << 8) | d}", f"{a}.{b}.{(c << 8) | d}",
            f"0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}", f"0{a:o}.0{b:o}.0{c:o}.0{d:o}", f"{a:03d}.{b:03d}.{c:03d}.{d:03d}"]


@settings(max_examples=300, deadline=None)
@given(_FORBIDDEN_V4)
def test_every_spelling_of_a_forbidden_ipv4_address_is_refused(value):
    ip = ipaddress.IPv4Address(value)
    for netloc in [str(ip), f"[::ffff:{ip}]", f"[64:ff9b::{ip}]"] + _spellings(value):
        try:
            authority = parse_authority(netloc, "http")
        except UriNotAllowed:
            continue  # a non-canonical spelling: refused by the grammar
        with pytest.raises(AddressNotAllowed):
            resolve_checked(authority, (), fake_resolver({}))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.lists(st.ip_addresses(), min_size=1, max_size=3))
def test_a_host_either_is_refused_or_resolves_to_public_addresses_only(netloc, answers):
    resolver = fake_resolver({})
    try:
        authority = parse_authority(netloc, "http")
        resolver = fake_resolver({authority.host: [str(a) for a in answers]})
        addresses = resolve_checked(authority, (), resolver)
    except (UriNotAllowed, ObjectNotFound):
        return
    for address in addresses:
        assert forbidden_reason(ipaddress.ip_address(address)) is None


def test_policy_fields_survive_the_trip_to_the_job():
    """The job gets its config as IMGSTREAM_* strings: the policy must come back the same."""
    config = PipelineConfig(allowed_schemes=("s3", "https"), allowed_hosts=("images.example.com", "*.cdn.example:*",
                                                                            "[::1]:8443", "*:*"),
                            http_trusted_networks=("10.20.0.0/16", "fd00::/8"), allowed_s3_prefixes=("b/p/",),
                            max_redirects=0, max_decode_ms=250)
    env = {f"IMGSTREAM_{k.upper()}": v for k, v in config.to_mapping().items()}
    assert PipelineConfig.from_env(env) == config
