"""The deployment files, parsed (Docker has no daemon here): docker-compose.yml, deploy/Caddyfile
(through `caddy adapt`), the Dockerfile and controlplane/gunicorn.conf.py agree with each other and
with the settings. tests/test_production_stack.py runs the same commands outside Docker."""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import re
import runpy
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ("migrate", "web", "worker", "control-worker", "beat", "gpu-worker")
LONG_RUNNING = ("web", "worker", "control-worker", "beat", "gpu-worker")
WORKERS = ("worker", "control-worker", "gpu-worker")
WEB_COMMAND = "gunicorn -c controlplane/gunicorn.conf.py controlplane.wsgi"
CADDY = "/usr/bin/caddy"


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$ against ``env``."""
    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if op == ":?" and not env.get(name):
            raise KeyError(f"{name}: {arg}")
        return env.get(name) or (arg if op == ":-" else "")
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value).replace("$$", "$")


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(text))
    assert parts and "".join(a + u for a, u in parts) == str(text), f"not a compose duration: {text!r}"
    return sum(float(amount) * units[unit] for amount, unit in parts)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip()[:-1] + " " if raw.rstrip().endswith("\\") else raw
        if not raw.rstrip().endswith("\\"):
            lines.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in lines]


def require_caddy() -> None:
    if not shutil.which(CADDY):
        message = f"needs Caddy at {CADDY} (make deps installs it: scripts/apt-deps.sh)"
        if os.environ.get("EDGEPLANE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def caddy_adapt(env: dict[str, str]) -> dict:
    require_caddy()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGEPLANE_")}
    result = subprocess.run([CADDY, "adapt", "--config", str(ROOT / "deploy" / "Caddyfile"), "--adapter", "caddyfile"],
                            capture_output=True, text=True, timeout=60, env={**clean, **env}, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- compose --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_service_runs_the_production_settings_from_the_image(name):
    service = SERVICES[name]
    assert service["environment"]["DJANGO_SETTINGS_MODULE"] == "controlplane.settings_production"
    assert service["image"].startswith("edgeplane:") and "build" in service
    assert "appvar:/app/var" in service["volumes"]


def test_the_web_service_is_gunicorn_with_the_repos_configuration():
    assert SERVICES["web"]["command"] == WEB_COMMAND
    assert (ROOT / "controlplane" / "gunicorn.conf.py").is_file() and (ROOT / "controlplane" / "wsgi.py").is_file()
    assert "runserver" not in (ROOT / "docker-compose.yml").read_text()


def test_migrations_run_once_before_web_and_the_workers_start():
    migrate = SERVICES["migrate"]
    assert shlex.split(migrate["command"]) == ["python", "manage.py", "migrate", "--noinput"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                     "redis": {"condition": "service_healthy"}}
    for name in LONG_RUNNING:
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["postgres"] == depends["redis"] == {"condition": "service_healthy"}, name
        assert "migrate" not in SERVICES[name]["command"], name


def test_only_caddy_publishes_ports_80_and_443_and_waits_for_a_healthy_web():
    published = {name: s["ports"] for name, s in SERVICES.items() if s.get("ports")}
    assert set(published) == {"caddy"}
    assert {p.split("/")[0] for p in published["caddy"]} == {"80:80", "443:443"}
    caddy = SERVICES["caddy"]
    assert caddy["image"] == "caddy:2"
    assert caddy["depends_on"] == {"web": {"condition": "service_healthy"}}
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert {v.split(":")[1] for v in caddy["volumes"] if not v.startswith(".")} == {"/data", "/config"}
    assert interpolate(caddy["environment"]["EDGEPLANE_SITE_ADDRESS"], {}) == "http://localhost"


def test_web_trusts_exactly_caddys_fixed_address_on_the_app_network():
    subnet = ipaddress.ip_network(COMPOSE["networks"]["default"]["ipam"]["config"][0]["subnet"])
    address = ipaddress.ip_address(SERVICES["caddy"]["networks"]["default"]["ipv4_address"])
    assert address in subnet
    trusted = SERVICES["web"]["environment"]["EDGEPLANE_TRUSTED_PROXIES"].split(",")
    assert trusted == [str(address)]
    # No other service declares networks: they all sit on the default one with Caddy.
    assert [n for n, s in SERVICES.items() if "networks" in s] == ["caddy"]


def test_the_web_healthcheck_asks_liveness_and_readiness_with_python_over_the_internal_address():
    check = SERVICES["web"]["healthcheck"]
    assert check["test"][:3] == ["CMD", "python", "-c"]  # the slim image has no curl
    code = check["test"][3]
    compile(code, "healthcheck", "exec")
    assert "'healthz'" in code and "'readyz'" in code and "http://127.0.0.1:8000/" in code
    hosts = interpolate(SERVICES["web"]["environment"]["DJANGO_ALLOWED_HOSTS"], {"DJANGO_ALLOWED_HOSTS": "x.org"})
    assert {"127.0.0.1", "web"} <= set(hosts.split(","))  # the healthcheck's and the gpu-worker's Host
    # Asked over plain http inside the network: never sent to https (settings_production).
    exempt = re.search(r"SECURE_REDIRECT_EXEMPT = (\[.*\])", (ROOT / "controlplane" / "settings_production.py")
                       .read_text()).group(1)
    patterns = [re.compile(p) for p in ast.literal_eval(exempt)]
    for path in ("healthz", "readyz", "metrics", "api/ingest/runs/7/steps/"):
        assert any(p.search(path) for p in patterns), path
    for path in ("accounts/login/", "runs/7/", "api/runs/", "healthz/x", "admin/"):
        assert not any(p.search(path) for p in patterns), path


@pytest.mark.parametrize("name", WORKERS)
def test_each_worker_answers_a_ping_as_its_healthcheck_and_shuts_down_warm(name):
    service = SERVICES[name]
    assert service["command"].startswith("celery -A controlplane worker")
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert shlex.split(interpolate(test[1], {})) == [
        "celery", "-A", "controlplane", "inspect", "ping", "--destination", "celery@$HOSTNAME", "--timeout", "10"]
    assert duration_seconds(service["healthcheck"]["timeout"]) > 10
    assert duration_seconds(service["stop_grace_period"]) >= 60


def test_beats_reconcile_tasks_have_their_own_solo_worker_and_the_training_worker_leaves_that_queue():
    from django.conf import settings

    queue = getattr(settings, "EDGEPLANE_CONTROL_QUEUE", "control")
    control = shlex.split(SERVICES["control-worker"]["command"])
    assert control[control.index("-Q") + 1].split(",") == [queue] and "--pool=solo" in control
    training = shlex.split(SERVICES["worker"]["command"])
    assert "-Q" not in training or queue not in training[training.index("-Q") + 1].split(",")
    assert "EDGEPLANE_CONTROL_QUEUE" not in SERVICES["control-worker"]["environment"]


def test_the_web_collects_metrics_of_all_its_processes_and_stops_gracefully():
    web = SERVICES["web"]
    assert web["environment"]["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    conf = runpy.run_path(str(ROOT / "controlplane" / "gunicorn.conf.py"))
    assert duration_seconds(web["stop_grace_period"]) > conf["graceful_timeout"]


def test_every_named_volume_is_declared_and_the_data_ones_are_kept():
    named = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert named <= set(COMPOSE["volumes"])
    assert {"pgdata", "appvar", "caddy_data"} <= named


def _production_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import django; django.setup(); from django.conf import settings as s; " \
           "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.ALLOWED_HOSTS)"
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EDGEPLANE_"))}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False, env={**keep, **env})


def _compose_app_env(given: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: interpolate(str(v), given) for k, v in SERVICES["web"]["environment"].items()}
    env.pop("DATABASE_URL")  # the compose host "postgres" does not resolve here; settings do not connect
    return env | {"EDGEPLANE_VAR_DIR": str(tmp_path), "EDGEPLANE_STATIC_ROOT": str(tmp_path / "static")}


def test_compose_defaults_are_local_plain_http_and_a_real_domain_needs_https(tmp_path):
    secret = {"SECRET_KEY": secrets.token_urlsafe(50)}
    local = _production_settings(_compose_app_env(secret, tmp_path))
    assert local.returncode == 0, local.stderr
    assert local.stdout.split(" ", 3)[:3] == ["False", "False", "0"]
    domain = secret | {"DJANGO_ALLOWED_HOSTS": "edgeplane.example.com"}
    refused = _production_settings(_compose_app_env(domain, tmp_path))
    assert refused.returncode != 0
    assert "EDGEPLANE_PLAIN_HTTP=1" in refused.stderr and "edgeplane.example.com" in refused.stderr
    https = _production_settings(_compose_app_env(domain | {"EDGEPLANE_PLAIN_HTTP": "0"}, tmp_path))
    assert https.returncode == 0, https.stderr
    assert https.stdout.split(" ", 3)[:3] == ["True", "True", "31536000"]
    assert "'edgeplane.example.com', '127.0.0.1', 'web'" in https.stdout


@pytest.mark.parametrize("hosts", ["localhost,example.org", "*", ".localhost", "127.0.0.2", "web.example.com",
                                   "localhost.example.com"])
def test_plain_http_is_refused_for_any_host_that_is_not_local(hosts, tmp_path):
    env = {"SECRET_KEY": "k" * 50, "DJANGO_ALLOWED_HOSTS": hosts, "EDGEPLANE_PLAIN_HTTP": "1",
           "DJANGO_SETTINGS_MODULE": "controlplane.settings_production", "EDGEPLANE_VAR_DIR": str(tmp_path)}
    result = _production_settings(env)
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr
    assert "EDGEPLANE_PLAIN_HTTP=0" in result.stderr  # says what to do


@pytest.mark.parametrize(("env", "says"), [
    ({"EDGEPLANE_PLAIN_HTTP": "yes"}, "EDGEPLANE_PLAIN_HTTP='yes'"),
    ({"DJANGO_SECURE_PROXY_SSL_HEADER": "1"}, "EDGEPLANE_TRUSTED_PROXIES"),
    ({"EDGEPLANE_TRUSTED_PROXIES": "caddy"}, "EDGEPLANE_TRUSTED_PROXIES: 'caddy'"),
])
def test_a_wrong_proxy_or_http_setting_fails_saying_what_to_do(env, says, tmp_path):
    base = {"SECRET_KEY": "k" * 50, "DJANGO_ALLOWED_HOSTS": "localhost",
            "DJANGO_SETTINGS_MODULE": "controlplane.settings_production", "EDGEPLANE_VAR_DIR": str(tmp_path)}
    result = _production_settings(base | env)
    assert result.returncode != 0 and says in result.stderr


# -- the Caddyfile ---------------------------------------------------------------------------------------


def _site_routes(config: dict) -> tuple[dict, list[dict]]:
    servers = config["apps"]["http"]["servers"]
    assert len(servers) == 1
    server = next(iter(servers.values()))
    (site,) = server["routes"]
    return server, site


def _handlers(site: dict) -> list[dict]:
    (subroute,) = site["handle"]
    assert subroute["handler"] == "subroute"
    return subroute["routes"]


def test_caddy_proxies_localhost_over_plain_http_to_web_by_default():
    config = caddy_adapt({})
    assert config["admin"] == {"disabled": True}
    server, site = _site_routes(config)
    assert server["listen"] == [":80"]
    assert site["match"] == [{"host": ["localhost"]}]
    routes = _handlers(site)
    metrics, proxy = routes
    assert metrics["match"] == [{"path": ["/metrics", "/metrics/*"]}]
    assert metrics["handle"] == [{"handler": "static_response", "status_code": 404, "body": "Not Found"}]
    assert proxy == {"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "web:8000"}]}]}
    # web:8000 is what gunicorn binds in the container.
    conf = runpy.run_path(str(ROOT / "controlplane" / "gunicorn.conf.py"))
    assert conf["bind"] == ["0.0.0.0:8000"]


def test_caddy_serves_a_domain_over_https_with_the_same_routes():
    config = caddy_adapt({"EDGEPLANE_SITE_ADDRESS": "edgeplane.example.com"})
    server, site = _site_routes(config)
    assert server["listen"] == [":443"]  # Caddy adds the :80 redirect and gets the certificate itself
    assert "automatic_https" not in server
    assert site["match"] == [{"host": ["edgeplane.example.com"]}]
    assert [r.get("match") for r in _handlers(site)] == [[{"path": ["/metrics", "/metrics/*"]}], None]


# -- the Dockerfile ----------------------------------------------------------------------------------------


def test_the_image_collects_static_files_at_build_time_outside_the_var_volume():
    steps = dockerfile_instructions()
    runs = [args for op, args in steps if op == "RUN"]
    collect = [i for i, (op, args) in enumerate(steps) if op == "RUN" and "manage.py collectstatic --noinput" in args]
    assert len(collect) == 1
    last_copy = max(i for i, (op, _) in enumerate(steps) if op == "COPY")
    install = max(i for i, (op, args) in enumerate(steps) if op == "RUN" and "pip install" in args)
    assert collect[0] > max(last_copy, install)  # the code and the packages are there
    env = " ".join(args for op, args in steps if op == "ENV")
    static_root = re.search(r"EDGEPLANE_STATIC_ROOT=(\S+)", env).group(1)
    var_dir = re.search(r"EDGEPLANE_VAR_DIR=(\S+)", env).group(1)
    assert "DJANGO_SETTINGS_MODULE=controlplane.settings_production" in env
    mounts = {v.split(":")[1] for name in APP_SERVICES for v in SERVICES[name]["volumes"]} | {var_dir}
    assert not any(Path(static_root).is_relative_to(m) for m in mounts), (static_root, mounts)
    assert runs  # and it does not write into the var folder the volume will cover
    assert "EDGEPLANE_VAR_DIR=/tmp/" in steps[collect[0]][1]


def test_the_image_runs_gunicorn_as_compose_does_as_a_user_that_is_not_root():
    steps = dockerfile_instructions()
    (cmd,) = [args for op, args in steps if op == "CMD"]
    assert json.loads(cmd) == WEB_COMMAND.split()
    users = [(i, args) for i, (op, args) in enumerate(steps) if op == "USER"]
    assert users and users[-1][1] not in ("root", "0")
    assert users[-1][0] < next(i for i, (op, _) in enumerate(steps) if op == "CMD")


# -- gunicorn.conf.py ------------------------------------------------------------------------------------


def _gunicorn_conf(monkeypatch, **env: str) -> dict:
    for name in ("EDGEPLANE_WEB_WORKERS", "WEB_CONCURRENCY", "EDGEPLANE_WEB_THREADS", "EDGEPLANE_WEB_BIND",
                 "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "controlplane" / "gunicorn.conf.py"))


def test_gunicorn_sizes_itself_from_the_environment(monkeypatch):
    default = _gunicorn_conf(monkeypatch)
    assert 1 <= default["workers"] <= 8 and default["threads"] == 4 and default["worker_class"] == "gthread"
    assert default["accesslog"] == "-" and default["forwarded_allow_ips"] == ""
    assert default["secure_scheme_headers"] == {}
    assert _gunicorn_conf(monkeypatch, WEB_CONCURRENCY="3")["workers"] == 3
    assert _gunicorn_conf(monkeypatch, WEB_CONCURRENCY="3", EDGEPLANE_WEB_WORKERS="5")["workers"] == 5
    for bad in ("0", "two", "-1"):
        with pytest.raises(SystemExit, match=f"EDGEPLANE_WEB_WORKERS='{bad}'"):
            _gunicorn_conf(monkeypatch, EDGEPLANE_WEB_WORKERS=bad)


def test_gunicorn_accepts_its_configuration(monkeypatch):
    from gunicorn.config import Config

    conf = _gunicorn_conf(monkeypatch)
    config = Config()
    for name, value in conf.items():
        if name in config.settings:
            config.set(name, value)  # each setting's own validator
    assert config.forwarded_allow_ips == [] and config.control_socket_disable is True


def test_the_metrics_folder_is_emptied_at_start_and_a_dead_workers_gauges_leave_it(monkeypatch, tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999.db").write_bytes(b"old")
    (folder / "sub").mkdir()
    conf = _gunicorn_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(folder))
    conf["on_starting"](None)
    assert list(folder.iterdir()) == []
    for name in ("gauge_livesum_4242.db", "gauge_liveall_4242.db", "counter_4242.db", "gauge_livesum_7.db"):
        (folder / name).write_bytes(b"")
    conf["child_exit"](None, SimpleNamespace(pid=4242))
    assert sorted(p.name for p in folder.iterdir()) == ["counter_4242.db", "gauge_livesum_7.db"]
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    conf["child_exit"](None, SimpleNamespace(pid=7))  # without the folder: nothing to do, no error
    conf["on_starting"](None)
