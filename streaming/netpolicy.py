"""Where http(s) fetches may go: host grammar, the host allowlist and the address guard (SSRF).

* `parse_authority` splits ``host[:port]`` strictly: no user info, no backslashes, ASCII
  host names only (IDNs in their punycode form), IPv6 literals without zone ids, and no
  numeric host in a non-canonical form (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
  ``127.1``: forms that C resolvers turn into 127.0.0.1 but no allowlist would recognise).
* `host_allowed` matches ``allowed_hosts`` patterns: ``name``, ``*.suffix`` (any subdomain,
  not the suffix itself), ``*`` (any host), each optionally followed by ``:port`` or ``:*``;
  without a port only the scheme's default port (80, 443) matches.
* `forbidden_reason` says why an address may not be fetched from: loopback, unspecified,
  link-local (cloud metadata 169.254.169.254, fe80::/10), private (RFC 1918, fc00::/7),
  shared/CGNAT (100.64.0.0/10), multicast, reserved, IANA special-purpose (documentation,
  benchmarking, protocol assignments), or otherwise not globally routable. An
  IPv6 address that embeds an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible,
  NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo) is judged by that IPv4 address too.
* `resolve_checked` resolves a host once and refuses it if ANY of its addresses is forbidden
  (and not inside ``http_trusted_networks``). The caller connects to one of the returned
  addresses, never to the name, so DNS cannot answer differently between check and connect.

Errors: `UriNotAllowed` (grammar, allowlist), `AddressNotAllowed` (the guard), `ObjectNotFound`
(the name does not exist), `FetchFailed` (DNS failed otherwise). Messages never contain a
resolved address (that would map a company's internal DNS for whoever reads the results).
"""
from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from streaming.errors import AddressNotAllowed, FetchFailed, ObjectNotFound, UriNotAllowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list]  # socket.getaddrinfo's signature
DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
_PORT = re.compile(r"[0-9]{1,5}")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
# IANA special-purpose blocks, listed here too so that the answer does not depend on which
# Python patch release's ipaddress tables are installed (3.11.7 calls 192.0.0.8 global).
_SPECIAL = tuple(map(ipaddress.ip_network, (
    "0.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "240.0.0.0/4", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16",
)))
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


@dataclass(frozen=True)
class Authority:
    """A checked host and port. `host` is lower case, without a trailing dot; IPv6 unbracketed."""

    host: str
    port: int
    ip: IPAddress | None  # set when the host is an IP literal

    def netloc(self, scheme: str) -> str:
        """``host[:port]`` as written in a URI and a Host header (port only when not the default)."""
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return host if DEFAULT_PORTS.get(scheme) == self.port else f"{host}:{self.port}"


# -- grammar ---------------------------------------------------------------------------
def parse_authority(netloc: str, scheme: str) -> Authority:
    """Split and check ``host[:port]``. Raises `UriNotAllowed`; the message never repeats it."""
    if "@" in netloc:
        raise UriNotAllowed("http(s) URI must not contain user info (user:password@)")
    if "\\" in netloc or "%" in netloc or any(c.isspace() for c in netloc):
        raise UriNotAllowed("http(s) host contains a backslash, '%' or whitespace")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise UriNotAllowed("unterminated IPv6 literal")
        literal, rest = netloc[1:end], netloc[end + 1:]
        try:
            ip: IPAddress | None = ipaddress.IPv6Address(literal)
        except ValueError:
            raise UriNotAllowed("invalid IPv6 literal") from None
        host = str(ip)
        if rest and not rest.startswith(":"):
            raise UriNotAllowed("invalid characters after the IPv6 literal")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = netloc.partition(":")
        port_text = port_text if colon else None
        host, ip = _check_host_name(host)
    port = DEFAULT_PORTS[scheme]
    if port_text is not None:
        if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
            raise UriNotAllowed("invalid port")
        port = int(port_text)
    return Authority(host, port, ip)


def _check_host_name(host: str) -> tuple[str, IPAddress | None]:
    if not host:
        raise UriNotAllowed("http(s) URI has no host")
    if not host.isascii():
        raise UriNotAllowed("host name must be ASCII (use the punycode form of an IDN)")
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):  # no top-level domain is numeric: an IPv4 literal
        try:
            return host, ipaddress.IPv4Address(host)
        except ValueError:
            raise UriNotAllowed("numeric host is not a canonical dotted-quad IPv4 address") from None
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UriNotAllowed("invalid host name")
    return host, None


# -- the allowlist ---------------------------------------------------------------------
@dataclass(frozen=True)
class HostPattern:
    host: str  # "*", "*.suffix" or an exact (canonical) host
    port: int | None  # None: the scheme's default port; -1: any port

    @classmethod
    def parse(cls, text: str) -> "HostPattern":
        raw = text.strip().lower()
        port: int | None = None
        if raw.startswith("["):
            end = raw.find("]")
            host, rest = raw[:end + 1], raw[end + 1:]
        else:
            host, colon, port_text = raw.partition(":")
            rest = ":" + port_text if colon else ""
        if rest:
            if rest == ":*":
                port = -1
            elif rest.startswith(":") and _PORT.fullmatch(rest[1:]) and 0 < int(rest[1:]) < 65536:
                port = int(rest[1:])
            else:
                raise ValueError(f"allowed_hosts entry {text!r}: invalid port")
        if host == "*":
            return cls("*", port)
        wildcard = host.startswith("*.")
        try:
            canonical = parse_authority(host[2:] if wildcard else host, "http").host
        except UriNotAllowed as exc:
            raise ValueError(f"allowed_hosts entry {text!r}: {exc.message}") from None
        return cls(("*." if wildcard else "") + canonical, port)

    def matches(self, authority: Authority, scheme: str) -> bool:
        if self.port is None and authority.port != DEFAULT_PORTS[scheme]:
            return False
        if self.port not in (None, -1) and authority.port != self.port:
            return False
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return authority.ip is None and authority.host.endswith(self.host[1:])
        return authority.host == self.host


def host_allowed(authority: Authority, scheme: str, patterns: Iterable[str]) -> bool:
    """True if any `allowed_hosts` pattern admits this host and port."""
    return any(_pattern(p).matches(authority, scheme) for p in patterns)


@functools.lru_cache(maxsize=256)
def _pattern(text: str) -> HostPattern:
    return HostPattern.parse(text)


def check_config(allowed_hosts: Sequence[str], trusted_networks: Sequence[str],
                 s3_prefixes: Sequence[str]) -> None:
    """Validate the policy's config fields (ValueError naming the bad entry)."""
    for pattern in allowed_hosts:
        HostPattern.parse(pattern)
    parse_networks(trusted_networks)
    for entry in s3_prefixes:
        bucket, slash, _prefix = entry.partition("/")
        if not slash or not bucket:
            raise ValueError(f"allowed_s3_prefixes entry {entry!r} must be 'bucket/key-prefix'")


def parse_networks(texts: Sequence[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(t.strip(), strict=False) for t in texts)
    except ValueError as exc:
        raise ValueError(f"http_trusted_networks: {exc}") from None


# -- the address guard -----------------------------------------------------------------
def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if any(ip in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why no request may go to `ip` ("loopback", "link-local", ...), or None if it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        for inner in embedded_ipv4(ip):
            reason = forbidden_reason(inner)
            if reason:
                return f"{reason} (IPv4 inside IPv6)"
        if ip.ipv4_mapped is not None:
            return None  # judged by the IPv4 address alone
        if ip.is_site_local:
            return "site-local"
    for reason, flag in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                         ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                         ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return reason
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared (carrier-grade NAT)"
    if any(ip.version == net.version and ip in net for net in _SPECIAL):
        return "special-purpose"
    if not ip.is_global:
        return "not globally routable"
    return None


def trusted(ip: IPAddress, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    candidates = [ip] + ([ip.ipv4_mapped] if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else [])
    return any(c.version == n.version and c in n for c in candidates for n in networks)


def check_address(ip: IPAddress, networks: Sequence, *, what: str = "the host is",
                  stage: str = "fetch") -> None:
    """Raise `AddressNotAllowed` unless `ip` is public or trusted."""
    if trusted(ip, networks):
        return
    reason = forbidden_reason(ip)
    if reason:
        raise AddressNotAllowed(f"{what} a forbidden address ({reason})", stage=stage)


def resolve_checked(authority: Authority, networks: Sequence, resolver: Resolver | None = None) -> list[str]:
    """Every address of the host, each checked; refused if any one is forbidden.

    Returns addresses as strings, in the resolver's order, for the caller to connect to.
    An IP literal is checked without asking DNS.
    """
    if authority.ip is not None:
        check_address(authority.ip, networks)
        return [str(authority.ip)]
    resolve = resolver or socket.getaddrinfo
    try:
        infos = resolve(authority.host, authority.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise ObjectNotFound(f"host {authority.host!r} does not resolve") from None
        raise FetchFailed(f"resolving {authority.host!r} failed: {exc.strerror or 'DNS error'}") from None
    except (OSError, UnicodeError):
        raise FetchFailed(f"resolving {authority.host!r} failed") from None
    addresses: list[str] = []
    for family, *_rest, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0]).split("%", 1)[0]
        ip = ipaddress.ip_address(text)
        if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3]:
            raise AddressNotAllowed(f"host {authority.host!r} resolves to a scoped IPv6 address")
        check_address(ip, networks, what=f"host {authority.host!r} resolves to")
        if str(ip) not in addresses:
            addresses.append(str(ip))
    if not addresses:
        raise FetchFailed(f"host {authority.host!r} has no IPv4/IPv6 address")
    return addresses
