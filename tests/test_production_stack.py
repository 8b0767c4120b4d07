"""The production stack as docker-compose.yml runs it, outside Docker: `migrate` and
`collectstatic`, gunicorn with controlplane/gunicorn.conf.py and settings_production (debug off,
WhiteNoise), and Caddy with deploy/Caddyfile in front, terminating TLS for https://localhost with
its own CA; the app trusts Caddy's X-Forwarded-* (EDGEPLANE_TRUSTED_PROXIES=127.0.0.1), so Django
sees https and its secure cookies and CSRF work. Chromium (certificate errors ignored) signs in
and loads a run page: charts drawn, no response >= 400, no console error (CSP included), static
files with hashed names served gzipped. The screenshot goes to tests/artifacts/. The same again
over plain http://localhost (EDGEPLANE_PLAIN_HTTP=1, compose's default for local use).

Every process is stopped at the end, also on failure."""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import shlex
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from django.conf import global_settings
from django.contrib.auth import get_user_model

from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.services import run_claim, run_create
from tests.frontend.conftest import train
from tests.frontend.helpers import CONFIG
from tests.processes import stop_group
from tests.services import free_port

playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CADDY = "/usr/bin/caddy"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PASSWORD = "stack-password-" + secrets.token_hex(4)
ALL_CHARTS_DRAWN = ("() => document.querySelectorAll('div.chart').length >= 10 && "
                    "[...document.querySelectorAll('div.chart')].every(d => d.querySelector('.main-svg'))")
# Known, not this test's subject: now and then (timing) Plotly draws the right-hand y axis line of
# the run page's two-axis panel (chart-lze-pool) once with NaN coordinates, which Chromium logs;
# the chart is drawn right at the next update. Only that exact message is let through.
KNOWN_PLOTLY_NAN = re.compile(r'^Error: <path> attribute d: Expected number, "M[0-9.]+,NaNVNaN"\. '
                              r'\(\S+/static/frontend/vendor/plotly\.min\.[0-9a-f]{12}\.js\)$')
HASHED = re.compile(r"\.[0-9a-f]{12}\.(css|js|svg)$")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def require(path: str) -> None:
    if not shutil.which(path):
        message = f"needs {path} (make deps installs it: scripts/apt-deps.sh)"
        if os.environ.get("EDGEPLANE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def compose_command(service: str) -> list[str]:
    """A service's command from docker-compose.yml, its program taken from this venv."""
    words = shlex.split(COMPOSE["services"][service]["command"])
    program = Path(sys.executable).parent / words[0]
    return [str(program) if program.exists() else words[0], *words[1:]]


def fetch(url: str, *, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET without following redirects or checking the certificate (Caddy's own CA)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=20) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process, grace_s=15)


def wait_until_it_answers(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            fetch(url)
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> Path:
    """The Dockerfile's collectstatic (production's storage: hashed, gzipped), shared with the load
    test: bench/load_test.py keeps it in the temporary folder under a hash of what it reads."""
    from bench.load_test import static_root as collected

    folder = tmp_path_factory.mktemp("static")
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EDGEPLANE_"))}
    env = keep | {"DJANGO_SETTINGS_MODULE": "controlplane.settings_production", "SECRET_KEY": "collectstatic-only",
                  "DJANGO_ALLOWED_HOSTS": "localhost", "EDGEPLANE_VAR_DIR": str(folder / "var")}
    static = collected(env)
    assert (static / "staticfiles.json").is_file()
    return static


@pytest.fixture
def run_with_telemetry(acme, enqueued, settings):
    """bob's run in team Acme, trained 8 steps with decisions and evaluations (the real ingestion)."""
    # bob signs in to gunicorn, whose settings know only Django's own hashers
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    dataset = dataset_import_builtin(team=acme, task="add", n_train=12, n_test=4, name="add-small")
    bob = get_user_model().objects.get(username="bob")
    bob.set_password(PASSWORD)
    bob.save()
    run = run_create(team=acme, dataset=dataset, name="production-run", config=dict(CONFIG), user=bob)
    run_claim(run_id=run.id, worker="test:1")
    train(run, range(8))
    return run


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_the_run_page_served_by_the_production_stack(scheme, static_root, run_with_telemetry, live_database_url,
                                                     tmp_path):
    require(CADDY)
    require(CHROMIUM)
    run = run_with_telemetry
    metrics_dir = tmp_path / "metrics"
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "EDGEPLANE_", "PROMETHEUS_")) and k != "DATABASE_URL"}

    def app_env_on(web_port: int) -> dict[str, str]:
        return keep | {
            "DJANGO_SETTINGS_MODULE": COMPOSE["services"]["web"]["environment"]["DJANGO_SETTINGS_MODULE"],
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
            # https through Caddy, as for a real domain; or plain http, local hosts only
            "EDGEPLANE_PLAIN_HTTP": "0" if scheme == "https" else "1",
            "DATABASE_URL": live_database_url,
            "EDGEPLANE_VAR_DIR": str(tmp_path / "var"),
            "EDGEPLANE_STATIC_ROOT": str(static_root),
            "EDGEPLANE_TRUSTED_PROXIES": "127.0.0.1",  # Caddy's address here
            "EDGEPLANE_WEB_BIND": f"127.0.0.1:{web_port}",
            "EDGEPLANE_WEB_WORKERS": "2",
            "EDGEPLANE_WEB_THREADS": "4",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }

    # The migrate service's command (the test database is migrated already: it must say so and pass).
    done = subprocess.run(compose_command("migrate"), cwd=ROOT, env=app_env_on(free_port()), capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    caddy_command = [CADDY, "run", "--config", str(ROOT / "deploy" / "Caddyfile"), "--adapter", "caddyfile"]
    gunicorn_log, caddy_log = tmp_path / "gunicorn.log", tmp_path / "caddy.log"
    for attempt in range(1, 4):
        # A port free when asked may be taken before the server binds it (the verl lane's Ray
        # starts many processes): then the stack starts again on other ports.
        web_port, http_port, https_port = free_port(), free_port(), free_port()
        base = f"https://localhost:{https_port}" if scheme == "https" else f"http://localhost:{http_port}"
        app_env = app_env_on(web_port)
        caddy_env = keep | {
            "EDGEPLANE_SITE_ADDRESS": base, "EDGEPLANE_UPSTREAM": f"127.0.0.1:{web_port}",
            "EDGEPLANE_HTTP_PORT": str(http_port), "EDGEPLANE_HTTPS_PORT": str(https_port),
            "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
            "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
        }
        with started(compose_command("web"), app_env, gunicorn_log) as gunicorn, \
                started(caddy_command, caddy_env, caddy_log) as caddy:
            try:
                wait_until_it_answers(f"http://127.0.0.1:{web_port}/accounts/login/", gunicorn, gunicorn_log)
                wait_until_it_answers(f"{base}/accounts/login/", caddy, caddy_log)
            except pytest.fail.Exception as exc:
                if "address already in use" in str(exc) and attempt < 3:
                    continue
                raise
            try:
                check_the_stack(run, base, http_port, web_port, app_env)
            except BaseException:
                print("gunicorn:\n" + gunicorn_log.read_text()[-4000:] + "\ncaddy:\n" + caddy_log.read_text()[-4000:])
                raise
            # Outside, /metrics is Caddy's 404: it never reached gunicorn (its access log).
            assert not re.search(r'"GET /+metrics', gunicorn_log.read_text(), re.IGNORECASE)
            assert '"GET /accounts/login/' in gunicorn_log.read_text()  # the access log is on
        break
    # Every line the web service wrote (gunicorn's own, its access lines, the app's) is one JSON object.
    lines = gunicorn_log.read_text().splitlines()
    assert lines and [line for line in lines if not _is_json_object(line)] == []
    assert any(json.loads(line).get("logger") == "gunicorn.access" for line in lines)
    assert gunicorn.returncode is not None and caddy.returncode is not None


def check_the_stack(run, base: str, http_port: int, web_port: int, app_env: dict[str, str]) -> None:
    secure = base.startswith("https:")
    status, headers, _ = fetch(f"http://localhost:{http_port}/accounts/login/")
    if secure:  # plain http to Caddy goes to https
        # (Caddy leaves out the port when it is its https_port: 443 in compose, a free one here.)
        assert status in (301, 308), (status, headers)
        assert headers["location"] in (f"{base}/accounts/login/", "https://localhost/accounts/login/"), headers
    else:  # the page itself, no redirect to an https nobody serves
        assert status == 200, (status, headers)
    # Debug is off: a 404 is the app's page, not Django's debug page; HSTS only over https.
    status, headers, body = fetch(f"{base}/no-such-page/")
    assert status == 404 and b"URLconf" not in body and b"DEBUG = True" not in body
    assert ("max-age=31536000" in headers.get("strict-transport-security", "")) == secure, headers
    for path in ("/metrics", "/metrics/", "/Metrics", "/metrics?format=text", "//metrics", "/%6Detrics"):
        status, _, body = fetch(base + path)
        assert status == 404 and b"# HELP" not in body and b"# TYPE" not in body, path
    check_the_health_endpoints(web_port, app_env)

    responses: list[tuple[int, str]] = []
    console_errors: list[str] = []
    elsewhere: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1360, "height": 900})
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.on("response", lambda r: responses.append((r.status, r.url)))
            page.on("console", lambda m: console_errors.append(f"{m.text} ({m.location.get('url')})")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:", "about:"))
                    else elsewhere.append(r.url))

            page.goto(f"{base}/accounts/login/")
            page.fill("input[name=username]", "bob")
            page.fill("input[name=password]", PASSWORD)
            page.click("button:has-text('Sign in')")  # over https, CSRF's origin check needs Django to see https
            page.wait_for_url(f"{base}/")
            cookies = {c["name"]: c for c in context.cookies()}
            assert cookies["sessionid"]["secure"] is secure and cookies["csrftoken"]["secure"] is secure

            page.goto(f"{base}/runs/{run.id}/")
            try:
                page.wait_for_function(ALL_CHARTS_DRAWN)
            except playwright_api.Error:
                undrawn = page.evaluate("() => [...document.querySelectorAll('div.chart')]"
                                        ".filter(d => !d.querySelector('.main-svg')).map(d => d.id)")
                pytest.fail(f"charts not drawn: {undrawn}; errors {console_errors}; "
                            f"failed responses {[r for r in responses if r[0] >= 400]}")
            page.wait_for_function("() => document.querySelectorAll('#recent tr').length > 0")
            page.wait_for_load_state("networkidle")
            # Before the screenshot: a full-page one resizes the viewport under the charts.
            errors_while_loading = [e for e in console_errors if not KNOWN_PLOTLY_NAN.search(e)]
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            name = "production_run_page" if secure else "production_run_page_plain_http"
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            statics = [url for _, url in responses if "/static/" in url]
        finally:
            browser.close()
    assert [r for r in responses if r[0] >= 400] == []
    assert errors_while_loading == []
    assert elsewhere == []
    # The page's CSS and JS, plotly.js among them: hashed names, gzip, cached for good.
    assert any(u.endswith(".css") for u in statics) and any("plotly.min." in u for u in statics), statics
    for url in statics:
        assert HASHED.search(url.split("?")[0]), url
        status, headers, body = fetch(url, headers={"Accept-Encoding": "gzip"})
        assert status == 200 and headers.get("content-encoding") == "gzip", (url, headers)
        assert "immutable" in headers.get("cache-control", ""), (url, headers)
        assert len(gzip.decompress(body)) > len(body)


def check_the_health_endpoints(web_port: int, app_env: dict[str, str]) -> None:
    """Compose's web healthcheck, run as written against this gunicorn, once /healthz and
    /readyz exist (their own tests are elsewhere)."""
    from django.urls import Resolver404, resolve

    try:
        resolve("/healthz")
        resolve("/readyz")
    except Resolver404:
        return
    code = COMPOSE["services"]["web"]["healthcheck"]["test"][3].replace("127.0.0.1:8000", f"127.0.0.1:{web_port}")
    done = subprocess.run([sys.executable, "-c", code], env=app_env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
