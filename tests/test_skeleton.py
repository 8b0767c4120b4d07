"""The skeleton holds together: Django starts, compose names its services, verl's GRPO runs."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "web", "worker", "control-worker", "beat", "gpu-worker")
# Where the variables compose sets are read: the settings, gunicorn's configuration (server
# and prometheus_client's multiprocess folder), the WSGI entry point (DJANGO_SETTINGS_MODULE).
READERS = ("controlplane/settings.py", "controlplane/settings_production.py", "controlplane/gunicorn.conf.py",
           "controlplane/wsgi.py")


def test_django_system_check_passes() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_compose_file_declares_the_stack_and_keeps_the_gpu_worker_behind_a_profile() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "caddy", "worker", "control-worker", "beat", "gpu-worker"} <= set(
        services)
    assert services["gpu-worker"]["profiles"] == ["gpu"]
    for name in APP_SERVICES:
        assert {"DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY"} <= set(
            services[name]["environment"]
        )


def test_compose_app_services_use_only_settings_names_and_reach_the_compose_services() -> None:
    from controlplane.settings_env import database_from_url

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    settings_text = "".join((ROOT / f).read_text() for f in READERS)
    for name in APP_SERVICES:
        env = services[name]["environment"]
        unknown = [var for var in env if f'"{var}"' not in settings_text]
        assert unknown == [], f"{name} sets variables the settings never read: {unknown}"
        db = database_from_url(env["DATABASE_URL"])
        pg = services["postgres"]["environment"]
        assert (db["HOST"], db["USER"], db["PASSWORD"], db["NAME"]) == (
            "postgres", pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
        )  # fmt: skip
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
        after = {"postgres", "redis"} | ({"migrate"} if name != "migrate" else set())
        assert set(services[name]["depends_on"]) == after, name


def test_the_image_installs_the_pinned_cpu_torch_and_the_gpu_profile_swaps_the_index() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    gpu_args = compose["services"]["gpu-worker"]["build"]["args"]
    assert "/whl/cu" in gpu_args["TORCH_INDEX_URL"]


def test_the_gpu_worker_consumes_the_verl_queue_with_the_verl_extra_and_reaches_the_web_service() -> None:
    import re

    from django.conf import settings

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    gpu = services["gpu-worker"]
    queues = gpu["command"].split("-Q", 1)[1].split()[0].split(",")
    assert settings.EDGEPLANE_VERL_QUEUE in queues
    assert settings.CELERY_TASK_ROUTES["edgeplane.launch_verl_run"]["queue"] == settings.EDGEPLANE_VERL_QUEUE
    assert "verl" in gpu["build"]["args"]["EXTRAS"].split(",")
    assert 'ARG EXTRAS=""' in (ROOT / "Dockerfile").read_text()
    assert "${EXTRAS:+[$EXTRAS]}" in (ROOT / "Dockerfile").read_text()
    # The job reports to the web service by default: a compose host the web service accepts.
    url = re.fullmatch(r"\$\{EDGEPLANE_CONTROL_URL:-(.+)\}", gpu["environment"]["EDGEPLANE_CONTROL_URL"])
    assert url, "EDGEPLANE_CONTROL_URL should default to the web service"
    host = url.group(1).split("//", 1)[1].split(":")[0]
    assert host in services and host in services["web"]["environment"]["DJANGO_ALLOWED_HOSTS"].split(",")
    assert "EDGEPLANE_RAY_ADDRESS" in gpu["environment"]
    # Run configs name a model folder: the web service validates it, the gpu-worker reads it.
    for name in ("web", "gpu-worker"):
        assert any(v.split(":")[1] == "/models" for v in services[name]["volumes"]), name
    assert "models" in compose["volumes"]


def test_verl_grpo_gives_zero_advantage_to_a_group_whose_rollouts_all_agree() -> None:
    import numpy as np
    import torch
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    # Two prompts, two rollouts each, outcome reward on the last of two tokens.
    rewards = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    mask = torch.ones_like(rewards)
    advantages, _ = compute_grpo_outcome_advantage(
        token_level_rewards=rewards, response_mask=mask, index=np.array(["a", "a", "b", "b"])
    )
    assert torch.all(advantages[:2] == 0)  # all correct: nothing to learn from prompt "a"
    assert torch.all(advantages[2] > 0) and torch.all(advantages[3] < 0)
