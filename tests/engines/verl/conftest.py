"""Fixtures of the verl contract tests: a local TransferQueue, and a claimed verl run.

The TransferQueue is SimpleStorage on a local Ray instance, CPU only.

verl's V1 trainer keeps every trajectory in TransferQueue; the overrides read and write it
through ``transfer_queue.kv_*``. ``tq.init`` needs Ray actors, so the fixture starts a
2-CPU local Ray once per session (about 12 s) and shuts it down at the end.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def local_tq():
    ray = pytest.importorskip("ray")
    tq = pytest.importorskip("transfer_queue")
    from omegaconf import OmegaConf

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    try:
        yield tq
    finally:
        tq.close()
        if started:
            ray.shutdown()


@pytest.fixture
def tq(local_tq):
    """The local TransferQueue, left empty after the test (verl's trainer writes to "train")."""
    yield local_tq
    for partition, items in (local_tq.kv_list() or {}).items():
        if items:
            local_tq.kv_clear(keys=list(items), partition_id=partition)


@pytest.fixture
def claimed_verl_run(monkeypatch):
    """A GRESO verl run on the control plane, claimed (attempt 1), as the verl worker leaves it."""
    from controlplane.accounts.services import team_create
    from controlplane.datasets.services import dataset_import_builtin
    from controlplane.runs.services import run_claim, run_create

    monkeypatch.setattr("controlplane.runs.services.run_enqueue", lambda *, run_id: None)
    team = team_create(name="Acme", owner_username="alice", owner_password="alice-pw")
    dataset = dataset_import_builtin(team=team, task="add", n_train=24, n_test=6, name="add-small")
    run = run_create(team=team, dataset=dataset, name="verl-remote",
                     config={"engine": "verl", "steps": 5, "batch_size": 4, "group_size": 4,
                             "selectors": {"greso": {}}})
    attempt = run_claim(run_id=run.id, worker="ray:test")
    assert attempt is not None
    run.attempt_number = attempt.number
    return run
