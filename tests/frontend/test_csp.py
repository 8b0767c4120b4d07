"""The Content-Security-Policy on every response, templates that keep it (no inline script or
handler), and /api/docs/ served from this server. The browser check of the same policy, page by
page, is tests/frontend/test_browser.py::test_every_page_sends_a_content_security_policy_that_it_keeps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

TEMPLATES = sorted((Path(__file__).resolve().parents[2] / "frontend" / "templates").rglob("*.html"))


def policy_of(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy", "")
    return {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}


def assert_strict(response) -> None:
    policy = policy_of(response)
    assert policy.get("script-src") == ["'self'"], policy
    assert policy.get("default-src") == ["'self'"] and policy.get("connect-src") == ["'self'"], policy
    assert policy.get("frame-ancestors") == ["'none'"] and policy.get("object-src") == ["'none'"], policy
    assert not any("'unsafe-eval'" in sources for sources in policy.values())


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/api/docs/", "/api/docs/?script", "/api/schema/",
                                  "/api/runs/", "/no-such-page/", "/admin/login/"])
def test_every_response_carries_the_policy_signed_in_or_not(path):
    assert_strict(Client().get(path))


@pytest.mark.django_db
def test_the_signed_in_pages_carry_the_policy(alice, acme):
    for path in ("/", "/runs/new/", "/compare/", f"/teams/{acme.slug}/budget/"):
        answer = alice.get(path)
        assert answer.status_code == 200, path
        assert_strict(answer)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_no_template_has_an_inline_script_or_handler(path):
    text = path.read_text()
    inline = [tag for tag in re.findall(r"<script\b[^>]*>", text) if "src=" not in tag]
    assert inline == [], f"{path.name}: inline <script> {inline}: move it to a static .js file (data: json_script)"
    handlers = re.findall(r"\son[a-z]+\s*=", text)
    assert handlers == [], f"{path.name}: inline handlers {handlers}: bind them in a static .js file"
    assert "javascript:" not in text


@pytest.mark.django_db
def test_the_api_docs_load_swagger_ui_from_this_server():
    page = Client().get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    sources = re.findall(r"""<(?:script|link)\b[^>]*(?:src|href)=["']([^"']+)["']""", html)
    assert any("swagger-ui-bundle.js" in s for s in sources), sources
    assert all(s.startswith("/") and not s.startswith("//") for s in sources), sources
    assert not re.search(r"<script\b(?![^>]*\bsrc=)[^>]*>", html), "inline script in the docs page"
    assert "cdn" not in html.lower()
    script = Client().get("/api/docs/?script")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
    from django.conf import settings
    from django.contrib.staticfiles import finders

    for source in sources:  # static files of this project (collectstatic serves them in production)
        if source.startswith("/" + settings.STATIC_URL.strip("/") + "/"):
            assert finders.find(source.split("/", 2)[2].split("?")[0]), source
