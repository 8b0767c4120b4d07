"""The verl trainer reporting to the real control plane, on CPU.

The trainer of ``harness.make_trainer`` (verl's dataloader over our parquet, the real replay
buffer and TransferQueue, the scripted rollout in place of vLLM) reads the control plane's
address, run, token and attempt from its environment, as a job launched by the worker does,
and posts each step's record through the HTTP sink to a live Django server. A cancel on the
control plane is obeyed at the next step boundary.
"""

from __future__ import annotations

import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_cancel
from controlplane.telemetry.models import PromptObservation, SelectionDecision, StepSummary
from controlplane.telemetry.services import token_issue
from tests.engines.verl.harness import char_tokenizer, run_step, trainer_for
from workers.engines.verl.checkpoint import SelectionCheckpointCallback
from workers.record import Control

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_verl_step_reaches_the_control_plane_and_a_cancel_stops_the_trainer(
        live_server, claimed_verl_run, tq, tmp_path, monkeypatch):
    run = claimed_verl_run
    monkeypatch.setenv("EDGEPLANE_CONTROL_URL", live_server.url)
    monkeypatch.setenv("EDGEPLANE_RUN_ID", str(run.id))
    monkeypatch.setenv("EDGEPLANE_RUN_TOKEN", token_issue(run_id=run.id))
    monkeypatch.setenv("EDGEPLANE_ATTEMPT", str(run.attempt_number))
    monkeypatch.setenv("EDGEPLANE_RUN_DIR", str(tmp_path / "run"))
    trainer = trainer_for(tmp_path, char_tokenizer(tmp_path / "tokenizer"), {"greso": {}})
    assert trainer.sink is not None
    trainer.report_start()

    results = [run_step(trainer, tq)[0] for _ in range(3)]
    assert list(StepSummary.objects.filter(run=run).order_by("step").values_list("step", flat=True)) == [0, 1, 2]
    for result in results:
        stored = PromptObservation.objects.filter(run=run, step=result.step)
        assert sorted(stored.values_list("prompt_key", flat=True)) == sorted(
            o["prompt_key"] for o in result.observations)
        assert SelectionDecision.objects.filter(run=run, step=result.step).count() == len(result.decisions)
        summary = StepSummary.objects.get(run=run, step=result.step)
        assert summary.rollouts_generated == result.accounting.rollouts_generated
        assert summary.groups_trained == 4
    assert trainer.control == Control.CONTINUE
    # verl saved a checkpoint after step 2 (checkpoint_every 2): the callback tells the control plane.
    SelectionCheckpointCallback().on_save(trainer, 2, str(tmp_path / "checkpoints" / "global_step_2"))
    run.refresh_from_db()
    assert run.last_checkpoint_step == 2

    run_cancel(run=Run.objects.get(pk=run.id))
    run_step(trainer, tq)  # verl's step 4: a checkpoint step (checkpoint_every 2), so no extra save
    assert trainer.control == Control.CANCEL
    assert trainer.total_training_steps == trainer.global_steps == 4  # fit's loop ends after this step
    trainer._select_ahead()
    assert trainer.selected_ahead is None  # nothing more is drawn for a cancelled run
    trainer.report_end()

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and "cancelled on request after step 4" in run.status_reason
    assert StepSummary.objects.filter(run=run).count() == 4  # each step once
