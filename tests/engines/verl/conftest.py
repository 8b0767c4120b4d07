"""A local TransferQueue (SimpleStorage on a local Ray instance, CPU only) for the contract tests.

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
