"""The client's address and scheme behind a reverse proxy, trusted only from the proxy itself.

Behind Caddy (docker-compose.yml) every request reaches the app from the proxy's address: the
client's address is in X-Forwarded-For and the scheme it used in X-Forwarded-Proto. Any client
can write those headers too, so they are read only when REMOTE_ADDR is one of
EDGEPLANE_TRUSTED_PROXIES (IP addresses or CIDR networks, comma-separated; empty, the default:
nobody). Then:

- REMOTE_ADDR becomes the right-most X-Forwarded-For address that is not itself a trusted proxy
  (the sign-in throttle keys on it: controlplane/accounts/backends.py);
- wsgi.url_scheme becomes X-Forwarded-Proto's "http" or "https" (request.is_secure(), the SSL
  redirect, secure cookies and CSRF's origin check follow it).

This replaces Django's SECURE_PROXY_SSL_HEADER, which believes the header from anyone. A value
that is not an address or a scheme is ignored (the proxy's own address stays): never a 500.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = ("http", "https")


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """EDGEPLANE_TRUSTED_PROXIES' entries as networks; a bad entry fails naming it."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"EDGEPLANE_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR network; give the "
                "reverse proxy's address(es), comma-separated, e.g. 172.30.0.2 or 10.0.0.0/8,fd00::/8"
            ) from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it ("203.0.113.7", "203.0.113.7:5151", "[2001:db8::1]:443",
    "2001:db8::1"); None if it is none (a name, "unknown", garbage)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        text = text[1:end] if end > 0 else ""
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # no zone (fe80::1%eth0): it names our interface
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 (a dual-stack socket's view)
    return address


def is_trusted(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def apply_forwarded(meta: MutableMapping[str, Any], networks: tuple[Network, ...]) -> None:
    """Rewrite REMOTE_ADDR and wsgi.url_scheme in ``meta`` from the forwarding headers, if the
    peer is a trusted proxy; otherwise leave them as the connection gave them."""
    if not is_trusted(parse_address(str(meta.get("REMOTE_ADDR") or "")), networks):
        return
    hops = [hop for hop in str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",") if hop.strip()]
    client_index = len(hops)  # the hop whose connection reached a trusted proxy (none: the peer itself)
    for index in range(len(hops) - 1, -1, -1):
        address = parse_address(hops[index])
        if address is None:
            break  # unreadable: keep the nearest address we know
        meta["REMOTE_ADDR"] = str(address)
        client_index = index
        if not is_trusted(address, networks):
            break
    protos = [p.strip().lower() for p in str(meta.get("HTTP_X_FORWARDED_PROTO") or "").split(",") if p.strip()]
    if protos:
        # A chain of proxies that each append: the entry for the client's hop; else the nearest proxy's.
        proto = protos[client_index] if len(protos) == len(hops) and client_index < len(hops) else protos[-1]
        if proto in SCHEMES:
            meta["wsgi.url_scheme"] = proto


class TrustedProxyMiddleware:
    """First in MIDDLEWARE: everything after it sees the client's address and scheme."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.networks = trusted_networks(settings.EDGEPLANE_TRUSTED_PROXIES)

    def __call__(self, request: Any) -> Any:
        apply_forwarded(request.META, self.networks)
        return self.get_response(request)
