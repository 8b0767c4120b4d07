import pytest

from workers.engines.config import ConfigError, RunConfig


def errors_of(values):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_mapping(values)
    return error.value.as_dict()


def test_defaults_are_a_valid_run():
    config = RunConfig.from_mapping({})
    assert (config.engine, config.task, config.batch_size, config.group_size) == ("local", "add_aligned", 32, 8)
    assert config.selectors == {"grpo": {}}


def test_every_problem_is_reported_at_once_with_its_field():
    errors = errors_of({"batch_size": 0, "top_p": 1.5, "lr": "fast", "engine": "jax"})
    assert {"batch_size", "top_p", "lr", "engine"} <= set(errors)
    assert errors["lr"] == ["must be a number, got 'fast' (range [1e-09, 1])"]
    assert errors["batch_size"] == ["must be >= 1, got 0 (range [1, 8192])"]
    assert "[0.001, 1]" in errors["top_p"][0]
    assert "local, verl" in errors["engine"][0]


def test_an_unknown_field_suggests_the_closest_names():
    errors = errors_of({"batch_sise": 8})
    assert "batch_size" in errors["batch_sise"][0]


def test_selector_problems_name_the_selector_field_and_the_fix():
    errors = errors_of({"group_size": 8, "selectors": {"hora": {"n0": 8}}})
    assert "lower hora.n0 or raise N" in errors["selectors.hora.n0"][0]
    errors = errors_of({"selectors": ["greso", "hive"]})
    assert "keep one of them" in errors["selectors"][0]
    errors = errors_of({"selectors": ["ppo"]})
    assert "valid methods are grpo, dapo, greso, hive, hora, rlzvp, lze" in errors["selectors"][0]


def test_a_list_of_method_names_is_accepted():
    assert RunConfig.from_mapping({"selectors": ["hive", "rlzvp"]}).selectors == {"hive": {}, "rlzvp": {}}


def test_missing_files_and_impossible_shapes_are_refused():
    errors = errors_of({"dataset": "/nonexistent/data.jsonl", "model": "/nonexistent/model", "minibatches": 99,
                        "model_dim": 30, "model_heads": 4})
    assert "no file at" in errors["dataset"][0]
    assert "models root (EDGEPLANE_MODELS_ROOT)" in errors["model"][0]
    assert "at most batch_size" in errors["minibatches"][0]
    assert "divisible" in errors["model_heads"][0]


def test_dr_grpo_turns_off_std_normalisation_in_the_advantage_method():
    assert RunConfig.from_mapping({"dr_grpo": True}).selector_params() == {"grpo": {"norm_by_std": False}}
    assert RunConfig.from_mapping({"dr_grpo": True, "selectors": ["rlzvp"]}).selector_params() == {
        "rlzvp": {"norm_by_std": False}}


def test_it_loads_yaml_and_json(tmp_path):
    (tmp_path / "run.yaml").write_text("batch_size: 16\nselectors: {hive: {}, hora: {n0: 4}}\n")
    assert RunConfig.load(tmp_path / "run.yaml").selectors == {"hive": {}, "hora": {"n0": 4}}
    (tmp_path / "run.json").write_text('{"steps": 7}')
    assert RunConfig.load(tmp_path / "run.json").steps == 7
    (tmp_path / "bad.yaml").write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.load(tmp_path / "bad.yaml")


def test_describe_lists_every_field_with_help():
    fields = {f["name"]: f for f in RunConfig.describe()}
    assert fields["group_size"]["default"] == 8 and fields["group_size"]["help"]
    assert all(f["help"] for f in fields.values())


def test_yaml_exponent_floats_without_a_dot_are_numbers(tmp_path):
    (tmp_path / "run.yaml").write_text("lr: 5e-4\nwarmup_lr: 3e-3\n")
    config = RunConfig.load(tmp_path / "run.yaml")
    assert (config.lr, config.warmup_lr) == (5e-4, 3e-3)
    assert "must be a number" in errors_of({"lr": "fast"})["lr"][0]


def test_task_levels_and_the_warmup_fields_are_checked():
    with pytest.raises(ConfigError) as bad:
        RunConfig.from_mapping({"task_levels": [9], "warmup_noise": 1.5, "lr_warmup_steps": -1})
    fields = bad.value.as_dict()
    assert "levels 2, 3, 4, 5, 6" in fields["task_levels"][0]
    assert set(fields) == {"task_levels", "warmup_noise", "lr_warmup_steps"}
    with pytest.raises(ConfigError, match="list of whole numbers"):
        RunConfig.from_mapping({"task_levels": "2,3"})
    assert RunConfig.from_mapping({"task_levels": [2, 3]}).task_levels == [2, 3]


def test_a_config_file_is_bounded_in_size_depth_and_aliases(tmp_path):
    import time

    bomb = "a: &a [" + ",".join(["lol"] * 10) + "]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
    cases = {"bomb.yaml": (bomb + "steps: *i\n", "anchors and aliases"),
             "deep.yaml": ("selectors: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", "nested deeper than 8"),
             "big.yaml": ("steps: 3\n" + "#" * (64 * 1024) + "\n", "over the limit of 65536 bytes"),
             "digits.yaml": ("steps: " + "9" * 5000 + "\n", "not valid YAML")}
    for name, (content, says) in cases.items():
        (tmp_path / name).write_text(content)
        started = time.monotonic()
        with pytest.raises(ConfigError, match=says):
            RunConfig.load(tmp_path / name)
        assert time.monotonic() - started < 2, name
    # What a real config holds still loads: flow and block style, comments, JSON.
    (tmp_path / "ok.yaml").write_text("# a run\nsteps: 3\nselectors:\n  hora: {n0: 4, shards: 1}\n  hive: {}\n")
    assert RunConfig.load(tmp_path / "ok.yaml").selectors == {"hora": {"n0": 4, "shards": 1}, "hive": {}}


def test_a_number_too_long_to_print_is_refused_with_a_message():
    errors = errors_of({"steps": 10**5000, "lr": 10**5000})
    assert errors["steps"] == ["must be <= 1000000, got a 16610-bit number (range [1, 1000000])"]
    assert "finite" in errors["lr"][0]
