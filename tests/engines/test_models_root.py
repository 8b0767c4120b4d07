"""`model:` names a folder under the models root (EDGEPLANE_MODELS_ROOT) and nothing else; every
refusal reads the same, so the answer never tells whether a path exists on the worker."""

from __future__ import annotations

import os

import pytest

from workers.engines.config import MODEL_REFUSED, ConfigError, RunConfig, models_root


@pytest.fixture
def root(tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "qwen-0.5b").mkdir(parents=True)
    (models / "org" / "llama").mkdir(parents=True)
    (models / "a-file").write_text("not a folder")
    (tmp_path / "outside").mkdir()  # exists, outside the root
    (models / "link-out").symlink_to(tmp_path / "outside")  # a symlink out of the root
    (models / "link-etc").symlink_to("/etc")
    (models / "link-in").symlink_to(models / "qwen-0.5b")  # a symlink that stays inside
    monkeypatch.setenv("EDGEPLANE_MODELS_ROOT", str(models))
    return models


def refusal(model):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_mapping({"model": model})
    return caught.value.as_dict()["model"]


def test_every_model_outside_the_root_gets_the_same_answer(root, tmp_path):
    refused = [
        "/etc", "/etc/", "/", "/nonexistent/model", str(tmp_path / "outside"), str(root / "qwen-0.5b"),
        "../../etc", "../outside", "qwen-0.5b/../../outside", "../models/../outside", "..", ".", "",
        "link-out", "link-etc", "link-etc/ssl", "nosuch", "org/nosuch", "a-file", "~", "~/models",
        "qwen-0.5b\x00", "x" * 1000, "/proc/self/cwd",
    ]
    answers = {model: refusal(model) for model in refused}
    assert all(answer == [MODEL_REFUSED] for answer in answers.values()), answers
    assert "/etc" not in MODEL_REFUSED and str(root) not in MODEL_REFUSED


def test_a_name_under_the_root_loads_from_its_resolved_folder(root):
    assert RunConfig.from_mapping({"model": "qwen-0.5b"}).model_dir() == str(root.resolve() / "qwen-0.5b")
    assert RunConfig.from_mapping({"model": "org/llama"}).model_dir() == str(root.resolve() / "org" / "llama")
    assert RunConfig.from_mapping({"model": "link-in"}).model_dir() == str(root.resolve() / "qwen-0.5b")
    assert RunConfig.from_mapping({"model": "tiny"}).model_dir() == "tiny"


def test_a_model_moved_out_after_validation_is_refused_when_loaded(root, tmp_path):
    config = RunConfig.from_mapping({"model": "qwen-0.5b"})
    (root / "qwen-0.5b").rename(tmp_path / "moved")
    (root / "qwen-0.5b").symlink_to(tmp_path / "outside")
    with pytest.raises(ConfigError, match="models root"):
        config.model_dir()


def test_the_root_defaults_to_var_models(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEPLANE_MODELS_ROOT", raising=False)
    monkeypatch.setenv("EDGEPLANE_VAR_DIR", str(tmp_path))
    assert models_root() == tmp_path / "models"
    monkeypatch.delenv("EDGEPLANE_VAR_DIR")
    assert models_root().parts[-2:] == ("var", "models") and os.path.isabs(models_root())
