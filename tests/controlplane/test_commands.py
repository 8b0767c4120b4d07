"""Management commands: createteam, import_dataset, launch_run; errors name what to fix."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.accounts.models import Membership, Role, Team
from controlplane.budgets.services import budget_set
from controlplane.datasets.models import Dataset, Prompt
from controlplane.runs.models import Run


@pytest.fixture(autouse=True)
def enqueued(monkeypatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr("controlplane.runs.services.run_enqueue", lambda *, run_id: sent.append(run_id))
    return sent


def run(*args: str) -> dict[str, str]:
    """Call a command; its 'key: value' lines as a dict (and the whole text under '')."""
    out = io.StringIO()
    call_command(*args, stdout=out)
    text = out.getvalue()
    lines = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {**lines, "": text}


@pytest.fixture
def team(db) -> Team:
    run("createteam", "Demo Team", "--owner", "demo", "--password", "demo-team-passphrase")
    return Team.objects.get(slug="demo-team")


@pytest.mark.django_db
def test_createteam_prints_the_slug_and_an_api_token_that_works():
    out = run("createteam", "Research Lab", "--owner", "ada", "--password", "research-lab-passphrase")
    assert out["team"] == "research-lab"
    membership = Membership.objects.get(team__slug="research-lab", user__username="ada")
    assert membership.role == Role.ADMIN
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {out['token']}")
    assert client.get("/api/teams/research-lab/budget/").status_code == 200
    # The password signs in too.
    assert APIClient().post("/api/auth/token/", {"username": "ada", "password": "research-lab-passphrase"},
                            format="json").json()["token"] == out["token"]


@pytest.mark.django_db
def test_createteam_run_twice_reuses_the_team_and_the_token():
    first = run("createteam", "Lab", "--owner", "ada", "--password", "lab-admin-passphrase")
    second = run("createteam", "Lab", "--owner", "ada")
    assert first["token"] == second["token"] and Team.objects.count() == 1


@pytest.mark.django_db
def test_createteam_refuses_a_name_without_letters_or_digits():
    with pytest.raises(CommandError, match="choose another team name"):
        run("createteam", "!!!", "--owner", "ada", "--password", "lab-admin-passphrase")
    assert not Team.objects.exists()


@pytest.mark.django_db
def test_import_dataset_imports_a_builtin_task(team):
    out = run("import_dataset", "--team", "demo-team", "--builtin", "add", "--train", "30", "--test", "10",
              "--seed", "3")
    dataset = Dataset.objects.get(pk=int(out["dataset"]))
    assert out["name"] == "add-3" and out["prompts"] == "40"
    assert dataset.prompts.filter(split="test").count() == 10


@pytest.mark.django_db
def test_import_dataset_imports_a_file(team, tmp_path):
    path = tmp_path / "arith.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{i}+1=", "ground_truth": str(i + 1), "data_source": "t",
                                        "extra_info": {"index": i}}) + "\n" for i in range(4)))
    out = run("import_dataset", str(path), "--team", "demo-team", "--name", "arith")
    assert out["name"] == "arith" and out["prompts"] == "4"
    assert Prompt.objects.filter(dataset__name="arith").count() == 4


@pytest.mark.django_db
def test_import_dataset_lists_the_bad_rows_and_stores_nothing(team, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "1+1=", "ground_truth": "2"}\n{"prompt": "2+2="}\nnot json\n')
    with pytest.raises(CommandError) as caught:
        run("import_dataset", str(path), "--team", "demo-team", "--name", "bad")
    message = str(caught.value)
    assert "nothing imported" in message and "row 2" in message and "row 3" in message
    assert not Dataset.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "says"), [
    (["--team", "nope", "--builtin", "add"], "no team 'nope'"),
    (["--team", "demo-team"], "either a FILE or --builtin"),
    (["/no/such/file.jsonl", "--team", "demo-team"], "no file at"),
    (["--team", "demo-team", "--builtin", "sqrt"], "unknown task"),
])
def test_import_dataset_errors_name_what_to_fix(team, args, says):
    with pytest.raises(CommandError, match=says):
        run("import_dataset", *args)


@pytest.mark.django_db
def test_import_dataset_refuses_a_file_over_the_upload_limit(team, tmp_path, settings):
    settings.EDGEPLANE_UPLOAD_MAX_BYTES = 10
    path = tmp_path / "big.jsonl"
    path.write_text('{"prompt": "1+1=", "ground_truth": "2"}\n')
    with pytest.raises(CommandError, match="EDGEPLANE_UPLOAD_MAX_BYTES"):
        run("import_dataset", str(path), "--team", "demo-team")


@pytest.mark.django_db
def test_import_dataset_refuses_a_builtin_name_the_team_already_has(team):
    run("import_dataset", "--team", "demo-team", "--builtin", "add", "--train", "8", "--test", "2")
    with pytest.raises(CommandError, match="already has a dataset named 'add-0': choose another name"):
        run("import_dataset", "--team", "demo-team", "--builtin", "add", "--train", "8", "--test", "2")
    assert Dataset.objects.count() == 1


@pytest.fixture
def dataset(team) -> Dataset:
    run("import_dataset", "--team", "demo-team", "--builtin", "add", "--train", "16", "--test", "4",
        "--name", "tiny-add")
    return Dataset.objects.get(name="tiny-add")


@pytest.mark.django_db
def test_launch_run_prints_the_id_of_the_queued_run(dataset, tmp_path, enqueued, django_capture_on_commit_callbacks):
    config = tmp_path / "run.yaml"
    config.write_text("steps: 3\nbatch_size: 4\ngroup_size: 2\nselectors:\n  hive: {}\n")
    with django_capture_on_commit_callbacks(execute=True):
        out = run("launch_run", "--team", "demo-team", "--dataset", "tiny-add", "--name", "first",
                  "--config", str(config), "--user", "demo")
    launched = Run.objects.get(pk=int(out[""].strip()))
    assert launched.name == "first" and launched.dataset == dataset and launched.methods == ["hive"]
    assert launched.created_by.username == "demo" and launched.status == "queued"
    assert enqueued == [launched.id]


@pytest.mark.django_db
def test_launch_run_lists_every_config_error(dataset, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("steps: 0\nbatch_sise: 4\n")
    with pytest.raises(CommandError) as caught:
        run("launch_run", "--team", "demo-team", "--dataset", "tiny-add", "--name", "x", "--config", str(config))
    message = str(caught.value)
    assert "steps: must be >= 1, got 0 (range [1, 1000000])" in message and "batch_sise: unknown field" in message
    assert not Run.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "content", "says"), [
    (["--team", "nope", "--dataset", "tiny-add"], "steps: 3\n", "no team 'nope'"),
    (["--team", "demo-team", "--dataset", "nosuch"], "steps: 3\n", "has no dataset 'nosuch'"),
    (["--team", "demo-team", "--dataset", "tiny-add", "--user", "stranger"], "steps: 3\n", "not a member"),
    (["--team", "demo-team", "--dataset", "tiny-add"], "- steps\n", "mapping of RunConfig fields"),
    (["--team", "demo-team", "--dataset", "tiny-add"], "steps: [\n", "not valid YAML"),
])
def test_launch_run_errors_name_what_to_fix(dataset, tmp_path, args, content, says):
    config = tmp_path / "c.yaml"
    config.write_text(content)
    with pytest.raises(CommandError, match=says):
        run("launch_run", *args, "--name", "x", "--config", str(config))
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_launch_run_refuses_a_run_over_budget(dataset, tmp_path):
    today = timezone.now().date()
    budget_set(team=dataset.team, period_start=today, period_end=today + dt.timedelta(days=30),
               limit_device_hours=0.0)
    config = tmp_path / "c.yaml"
    config.write_text("steps: 3\nbatch_size: 4\ngroup_size: 2\n")
    with pytest.raises(CommandError, match="refused: .*device-hours"):
        run("launch_run", "--team", "demo-team", "--dataset", "tiny-add", "--name", "x", "--config", str(config))
    assert not Run.objects.exists()


BILLION_LAUGHS = "a: &a [" + ",".join(["lol"] * 10) + "]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8)
) + "steps: *i\n"


@pytest.mark.django_db
@pytest.mark.parametrize(("content", "says"), [
    (BILLION_LAUGHS, "anchors and aliases"),  # 10**9 'lol's once expanded
    ("steps: 3\nlr: &x 0.1\nwarmup_lr: *x\n", "anchors and aliases"),  # even a harmless one: write values out
    ("selectors: " + "[" * 30_000 + "]" * 30_000 + "\n", "nested deeper than 8 levels"),
    ("selectors:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)), "nested deeper than 8 levels"),
    ("steps: 3\n#" + "x" * (70 * 1024) + "\n", "over the limit of 65536 bytes"),
    (b"steps: 3\n\xff\xfe\n", "not UTF-8"),
    ("steps: " + "9" * 5000 + "\n", "not valid YAML"),  # past Python's int conversion limit
    ("steps: !!python/object:os.system {}\n", "not valid YAML"),  # the safe loader builds no objects
    ("max_new_tokens: 1000000000\nlr: .nan\n", "max_new_tokens: must be <= 131072"),  # ranges, as ever
])
def test_launch_run_refuses_a_hostile_config_file_fast_and_stores_nothing(dataset, tmp_path, content, says):
    import time

    config = tmp_path / "c.yaml"
    config.write_bytes(content if isinstance(content, bytes) else content.encode())
    started = time.monotonic()
    with pytest.raises(CommandError, match=says) as caught:
        run("launch_run", "--team", "demo-team", "--dataset", "tiny-add", "--name", "x", "--config", str(config))
    assert time.monotonic() - started < 5, "the refusal must not parse or expand the whole file first"
    assert "Traceback" not in str(caught.value)
    assert not Run.objects.exists()


def test_manage_py_launch_run_exits_non_zero_on_an_alias_bomb(tmp_path):
    """The command line itself: a message on stderr and exit status 1, not a hang or a traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    config = tmp_path / "bomb.yaml"
    config.write_text(BILLION_LAUGHS)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(root / "manage.py"), "launch_run", "--team", "nope", "--dataset", "d",
                           "--name", "x", "--config", str(config)], check=False, cwd=root, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings"})
    assert done.returncode == 1
    assert "anchors and aliases" in done.stderr and "Traceback" not in done.stderr
