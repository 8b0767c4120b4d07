"""X-Forwarded-For / X-Forwarded-Proto are believed only from EDGEPLANE_TRUSTED_PROXIES
(controlplane/proxy.py): from anyone else they change nothing, and no value of them is a 500."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory, override_settings

from controlplane.accounts.models import SignInAttempt
from controlplane.proxy import TrustedProxyMiddleware, apply_forwarded, parse_address, trusted_networks

PROXY = "172.30.14.10"
LOGIN_URL = "/accounts/login/"


def seen(remote: str, trusted: list[str], forwarded_for: str | None = None, proto: str | None = None,
         scheme: str = "http") -> tuple[str, str]:
    """(REMOTE_ADDR, wsgi.url_scheme) as the app sees them after the middleware."""
    meta = {"REMOTE_ADDR": remote, "wsgi.url_scheme": scheme}
    if forwarded_for is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded_for
    if proto is not None:
        meta["HTTP_X_FORWARDED_PROTO"] = proto
    apply_forwarded(meta, trusted_networks(trusted))
    return meta["REMOTE_ADDR"], meta["wsgi.url_scheme"]


# -- who is believed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [[], [PROXY], ["10.0.0.0/8"], ["::1"], ["172.30.14.11"]])
def test_an_untrusted_peer_cannot_set_its_address_or_scheme(trusted):
    assert seen("203.0.113.9", trusted, "198.51.100.1", "https") == ("203.0.113.9", "http")
    assert seen(PROXY, [t for t in trusted if t != PROXY], "198.51.100.1", "https") == (PROXY, "http")


def test_the_trusted_proxy_gives_the_client_address_and_scheme():
    assert seen(PROXY, [PROXY], "198.51.100.1", "https") == ("198.51.100.1", "https")
    assert seen(PROXY, [PROXY], "198.51.100.1", "http", scheme="https") == ("198.51.100.1", "http")
    assert seen(PROXY, [PROXY]) == (PROXY, "http")  # no headers: the connection as it is


def test_a_cidr_network_trusts_every_address_in_it_and_no_other():
    assert seen("10.1.2.3", ["10.0.0.0/8"], "198.51.100.1", "https") == ("198.51.100.1", "https")
    assert seen("11.1.2.3", ["10.0.0.0/8"], "198.51.100.1", "https") == ("11.1.2.3", "http")
    assert seen("10.1.2.3", ["10.1.2.3/8"], "198.51.100.1") == ("198.51.100.1", "http")  # host bits: still the net


def test_the_client_is_the_right_most_address_that_is_not_a_trusted_proxy():
    trusted = [PROXY, "10.0.0.0/8"]
    # The client wrote "1.1.1.1" itself; 198.51.100.7 reached the outer proxy 10.0.0.5.
    assert seen(PROXY, trusted, "1.1.1.1, 198.51.100.7, 10.0.0.5", "https")[0] == "198.51.100.7"
    assert seen(PROXY, trusted, "1.1.1.1,198.51.100.7")[0] == "198.51.100.7"
    # Every hop a proxy of ours: the left-most is as far as we can know.
    assert seen(PROXY, trusted, "10.0.0.9, 10.0.0.5")[0] == "10.0.0.9"


def test_a_chain_of_appending_proxies_gives_the_scheme_of_the_clients_hop():
    trusted = [PROXY, "10.0.0.0/8"]
    assert seen(PROXY, trusted, "198.51.100.7, 10.0.0.5", "https, http") == ("198.51.100.7", "https")
    assert seen(PROXY, trusted, "198.51.100.7, 10.0.0.5", "http, https") == ("198.51.100.7", "http")
    # Counts that do not line up: the nearest proxy's word.
    assert seen(PROXY, trusted, "198.51.100.7", "http, https") == ("198.51.100.7", "https")


def test_ipv6_peers_clients_and_networks():
    assert seen("fd00::10", ["fd00::/64"], "2001:db8::1", "https") == ("2001:db8::1", "https")
    assert seen("fd00:1::10", ["fd00::/64"], "2001:db8::1", "https") == ("fd00:1::10", "http")
    assert seen("::1", ["::1"], "[2001:db8::2]:4711")[0] == "2001:db8::2"
    # A dual-stack socket's view of an IPv4 peer (::ffff:a.b.c.d) is that IPv4 address.
    assert seen("::ffff:172.30.14.10", [PROXY], "198.51.100.1")[0] == "198.51.100.1"
    assert seen(PROXY, [PROXY], "::ffff:198.51.100.3")[0] == "198.51.100.3"


def test_addresses_with_ports_are_read_without_them():
    assert parse_address("198.51.100.1:5151") == parse_address("198.51.100.1")
    assert str(parse_address("[2001:db8::1]:443")) == "2001:db8::1"
    assert str(parse_address('"[2001:db8::1]"')) == "2001:db8::1"
    # A zone is dropped: the address fits the throttle's column (45 characters) whatever follows %.
    assert str(parse_address("fe80::1%" + "x" * 100)) == "fe80::1"
    assert seen(PROXY, [PROXY], "[fe80::1%eth0]:80")[0] == "fe80::1"


@pytest.mark.parametrize("forwarded_for", ["", ",", " , ", "unknown", "not an address", "999.1.1.1",
                                           "198.51.100.1, garbage", "[::1", "1.2.3.4:x:y", "\x00", "a" * 10_000,
                                           ", , 198.51.100.1"])
@pytest.mark.parametrize("proto", [None, "", "HTTPS", "ftp", "https;", "https, ", "\u00e9"])
def test_a_malformed_header_never_breaks_the_request(forwarded_for, proto):
    address, scheme = seen(PROXY, [PROXY], forwarded_for, proto)
    assert parse_address(address) is not None  # always an address: the client's, or the nearest known hop
    assert scheme in ("http", "https")
    assert scheme == ("https" if proto in ("HTTPS", "https, ") else "http")
    if forwarded_for.strip(", ") and parse_address(forwarded_for.split(",")[-1]) is None:
        assert address == PROXY  # the nearest hop is unreadable: the proxy's own address stays


@pytest.mark.parametrize("entry", ["proxy", "10.0.0.0/33", "172.30.14.10:80", "*"])
def test_a_bad_trusted_proxies_entry_fails_naming_it(entry):
    with pytest.raises(ImproperlyConfigured, match=f"EDGEPLANE_TRUSTED_PROXIES: '{entry}'"):
        trusted_networks([entry])


# -- through Django --------------------------------------------------------------------------------------


def test_the_middleware_is_first_so_every_other_one_sees_the_client():
    from django.conf import settings

    assert settings.MIDDLEWARE[0] == "controlplane.proxy.TrustedProxyMiddleware"
    assert not getattr(settings, "SECURE_PROXY_SSL_HEADER", None)  # it would believe anyone


def test_the_middleware_rewrites_the_request_the_view_gets():
    got = {}

    def view(request):
        got.update(address=request.META["REMOTE_ADDR"], secure=request.is_secure(),
                   uri=request.build_absolute_uri("/x"))

    with override_settings(EDGEPLANE_TRUSTED_PROXIES=[PROXY], ALLOWED_HOSTS=["edgeplane.example.com"]):
        middleware = TrustedProxyMiddleware(view)
    request = RequestFactory().get("/", REMOTE_ADDR=PROXY, HTTP_HOST="edgeplane.example.com",
                                   HTTP_X_FORWARDED_FOR="198.51.100.4", HTTP_X_FORWARDED_PROTO="https")
    with override_settings(ALLOWED_HOSTS=["edgeplane.example.com"]):
        middleware(request)
    assert got == {"address": "198.51.100.4", "secure": True, "uri": "https://edgeplane.example.com/x"}


@pytest.mark.django_db
def test_a_spoofed_header_does_not_escape_the_sign_in_throttle(fast_passwords):
    """The throttle counts attempts by REMOTE_ADDR: a client rotating X-Forwarded-For is still
    one address, and behind the proxy each client is its own."""
    with override_settings(EDGEPLANE_TRUSTED_PROXIES=[PROXY]):
        direct = Client(REMOTE_ADDR="203.0.113.9")
        proxied = Client(REMOTE_ADDR=PROXY)
        for i in range(3):
            direct.post(LOGIN_URL, {"username": f"u{i}", "password": "wrong-password"},
                        HTTP_X_FORWARDED_FOR=f"198.51.100.{i}")
            proxied.post(LOGIN_URL, {"username": f"v{i}", "password": "wrong-password"},
                         HTTP_X_FORWARDED_FOR=f"1.1.1.1, 198.51.100.{i}")
    by_user = dict(SignInAttempt.objects.values_list("username", "address"))
    assert by_user == {"u0": "203.0.113.9", "u1": "203.0.113.9", "u2": "203.0.113.9",
                       "v0": "198.51.100.0", "v1": "198.51.100.1", "v2": "198.51.100.2"}


@pytest.mark.django_db
def test_only_the_proxy_can_say_https_to_the_ssl_redirect():
    with override_settings(EDGEPLANE_TRUSTED_PROXIES=[PROXY], SECURE_SSL_REDIRECT=True):
        spoofed = Client(REMOTE_ADDR="203.0.113.9").get(LOGIN_URL, HTTP_X_FORWARDED_PROTO="https")
        proxied = Client(REMOTE_ADDR=PROXY).get(LOGIN_URL, HTTP_X_FORWARDED_PROTO="https")
        plain = Client(REMOTE_ADDR=PROXY).get(LOGIN_URL, HTTP_X_FORWARDED_PROTO="http")
    assert spoofed.status_code == 301 and spoofed["Location"].startswith("https://")
    assert proxied.status_code == 200
    assert plain.status_code == 301


@pytest.mark.django_db
@pytest.mark.parametrize("forwarded_for", ["garbage", "[", "1.2.3.4, ::zz", "\u00e9\u00e9"])
def test_malformed_headers_from_the_proxy_answer_the_page_not_a_500(forwarded_for):
    with override_settings(EDGEPLANE_TRUSTED_PROXIES=[PROXY]):
        response = Client(REMOTE_ADDR=PROXY).get(LOGIN_URL, HTTP_X_FORWARDED_FOR=forwarded_for,
                                                 HTTP_X_FORWARDED_PROTO=forwarded_for)
    assert response.status_code == 200
