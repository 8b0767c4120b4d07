"""What a launch may point at: models under the models root only, the team's own datasets only,
no dataset path from the user; every refusal stores nothing."""

from __future__ import annotations

import pytest

from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Run
from controlplane.runs.services import run_create
from workers.engines.config import MODEL_REFUSED, ConfigError, models_root


@pytest.fixture
def root(tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "qwen").mkdir(parents=True)
    (models / "out").symlink_to("/etc")
    monkeypatch.setenv("EDGEPLANE_MODELS_ROOT", str(models))
    return models


def refused(**kwargs) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as caught:
        run_create(**kwargs)
    assert not Run.objects.exists()
    return caught.value.as_dict()


def test_a_launch_with_a_model_outside_the_root_is_refused_with_one_answer(acme, root, tmp_path, enqueued):
    dataset = dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2)
    (tmp_path / "elsewhere").mkdir()
    for model in ("/etc", "../../etc", "out", "nosuch", str(tmp_path / "elsewhere"), "../elsewhere"):
        errors = refused(team=acme, dataset=dataset, name="r", config={"model": model, "steps": 1})
        assert errors == {"model": [MODEL_REFUSED]}, model
    run = run_create(team=acme, dataset=dataset, name="ok", config={"model": "qwen", "steps": 1, "batch_size": 2,
                                                                   "group_size": 2})
    assert run.config["model"] == "qwen"  # stored as named; each worker resolves it under its own root


def test_a_launch_uses_only_the_team_s_own_datasets(acme, globex, enqueued):
    theirs = dataset_import_builtin(team=globex, task="add", n_train=8, n_test=2)
    ours = dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2)
    assert refused(team=acme, dataset=theirs, name="r", config={}) == {"dataset": ["no such dataset in this team"]}
    for name in ("dataset", "eval_dataset"):
        errors = refused(team=acme, dataset=ours, name="r", config={name: "/etc/passwd"})
        assert "set by the control plane" in errors[name][0]


def test_the_control_plane_and_the_workers_read_one_models_root(settings, monkeypatch):
    from pathlib import Path

    monkeypatch.delenv("EDGEPLANE_MODELS_ROOT", raising=False)
    assert Path(settings.EDGEPLANE_MODELS_ROOT) == models_root()
