"""The command line: exit codes and messages a person can act on."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.engines.local.conftest import TINY

ROOT = Path(__file__).resolve().parents[3]


def cli(*args, var):
    return subprocess.run([sys.executable, "-m", "workers.engines.local", *args, "--var", str(var)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_it_trains_then_resumes_from_the_command_line(tmp_path, var_dir):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**TINY, "steps": 2, "checkpoint_every": 1}))
    out = tmp_path / "out"
    first = cli("--config", str(config), "--out", str(out), var=var_dir)
    assert first.returncode == 0, first.stderr
    assert "succeeded" in first.stdout
    again = cli("--config", str(config), "--out", str(out), var=var_dir)
    assert again.returncode == 2 and "already holds a run: pass --resume" in again.stderr
    resumed = cli("--config", str(config), "--out", str(out), "--steps", "3", "--resume", var=var_dir)
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "step"] == [0, 1, 2]
    assert (out / "checkpoints" / "step_000003" / "state.pt").is_file()


def test_a_bad_config_exits_2_naming_the_field(tmp_path, var_dir):
    config = tmp_path / "run.yaml"
    config.write_text("batch_size: 0\nselectors: {hora: {n0: 8}}\n")
    result = cli("--config", str(config), "--out", str(tmp_path / "out"), var=var_dir)
    assert result.returncode == 2
    assert "batch_size: must be >= 1" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_malformed_dataset_exits_2_naming_the_row_and_field(tmp_path, var_dir):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "1+1=", "ground_truth": "2", "key": "a"}\n{"prompt": "2+2=", "key": "b"}\n')
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**TINY, "dataset": str(data)}))
    result = cli("--config", str(config), "--out", str(tmp_path / "out"), var=var_dir)
    assert result.returncode == 2
    assert "row 2" in result.stderr and "ground_truth" in result.stderr


def test_resume_without_a_checkpoint_says_what_to_do(tmp_path, var_dir):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(TINY))
    result = cli("--config", str(config), "--out", str(tmp_path / "none"), "--resume", var=var_dir)
    assert result.returncode == 2 and "run without --resume first" in result.stderr
