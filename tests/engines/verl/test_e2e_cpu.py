"""Every selector through verl 0.9.1's own training loop, on CPU (``engine: verl, device: cpu``).

Each test starts real ``python -m workers.engines.verl.train`` jobs (see e2e.py) that report to
a live control plane, and reads what verl logged and what the control plane stored. Slow
(about a minute a job), run serially, and part of ``make test``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

from controlplane.runs.models import RunStatus
from controlplane.telemetry.models import PromptObservation, SelectionDecision, StepSummary
from controlplane.telemetry.services import token_issue
from tests.engines.verl.e2e import reward, run_job, start_job, wait_for

# |delta weights| of one Adam step at lr 1e-3 on the tiny Llama (about 24k parameters): about
# lr x sqrt(parameters) ~ 0.1 unclipped; with a 1e-12 gradient clip each gradient entry is
# below Adam's eps (1e-8), so the step shrinks by ~1e-4 or more.
UNCLIPPED_UPDATE_MIN = 1e-2
CLIPPED_UPDATE_MAX = 1e-4

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def reporting(live_server, claimed_verl_run, monkeypatch):
    """The job's environment to report to the live control plane as the run's attempt."""
    run = claimed_verl_run
    return {"EDGEPLANE_CONTROL_URL": live_server.url, "EDGEPLANE_RUN_ID": str(run.id),
            "EDGEPLANE_RUN_TOKEN": token_issue(run_id=run.id), "EDGEPLANE_ATTEMPT": str(run.attempt_number)}


def steps_of(run) -> list[int]:
    return list(StepSummary.objects.filter(run_id=run.id).order_by("step").values_list("step", flat=True))


def decisions(run, prefix: str):
    return SelectionDecision.objects.filter(run_id=run.id, reason__startswith=prefix)


def test_grpo_checkpoints_resumes_after_a_crash_and_holds_every_step_once(tmp_path, reporting, claimed_verl_run):
    from workers.engines.verl.checkpoint import STATE_FILE
    from workers.selection.ledger import PromptLedger

    run = claimed_verl_run
    # 4 steps, a checkpoint every 2. The first job is killed (a crashed worker) once step 2's
    # checkpoint and selection state are on disk.
    first = start_job(tmp_path, {"grpo": {}}, env=reporting, steps=4, overrides=reward("by_response"))
    state_2 = tmp_path / "checkpoints" / "global_step_2" / STATE_FILE
    wait_for(state_2.exists, 240, "step 2's checkpoint", job=first)
    first.kill()
    # The second attempt resumes from verl's latest checkpoint and our state saved with it.
    second = run_job(tmp_path, {"grpo": {}}, env=reporting, attempt="attempt-2", steps=4,
                     overrides=reward("by_response"))
    assert second.process.returncode == 0, second.log_tail()
    assert "global_step_2" in second.log()  # verl loaded that checkpoint

    assert steps_of(run) == [0, 1, 2, 3]  # each step once: a step replayed after the crash replaced
    resumed = [m for m in second.metrics() if "edgeplane/step" in m]
    assert [int(m["edgeplane/step"]) for m in resumed] == [2, 3]
    # The selection state continued: the ledger at step 4 holds the visits of all 4 steps.
    ledger = PromptLedger.load(tmp_path / "checkpoints" / "global_step_4" / STATE_FILE)
    assert int(ledger.column("visits").sum()) == 4 * 2  # B = 2 groups a step, no step lost
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.last_checkpoint_step == 4
    # Weight sync and checkpoint seconds reach the step record (verl times them after step()).
    step_3 = StepSummary.objects.get(run_id=run.id, step=3)
    assert step_3.seconds["checkpoint"] > 0 and step_3.seconds["update"] > 0
    assert step_3.device_seconds == pytest.approx(sum(step_3.seconds.values()), rel=1e-6)
    # The rollout samples from the weights the actor trained: every sync after a step moved
    # them (the first sync of a job loads the checkpoint it starts from).
    updates = second.weight_updates()[1:]
    assert len(updates) >= 2 and min(updates) > UNCLIPPED_UPDATE_MIN, updates
    # The end-of-training validation ran although eval_every is 0.
    assert any(k.startswith("val-core/") for k in second.metrics()[-1])


def test_hive_with_verls_group_filter_trains_on_what_it_collected_when_the_dataset_runs_out(
        tmp_path, reporting, claimed_verl_run):
    run = claimed_verl_run
    # A random tiny model on the addition task: every group all-wrong (zero-variance). verl's
    # group filter evicts them and asks for refills until the 6 prompts are used up.
    job = run_job(tmp_path, {"hive": {}}, env=reporting, steps=2, task_train_size=6)
    assert job.process.returncode == 0, job.log_tail()
    assert steps_of(run) == [0, 1]
    step_0 = StepSummary.objects.get(run_id=run.id, step=0)
    assert any("no more distinct prompts" in a for a in step_0.alerts), step_0.alerts
    # Every prompt was rolled out once in the step, refills included, and every group recorded.
    # None carries signal, so verl trains on its batch with zero advantages (the step says so)
    # and the accounting counts no group trained.
    assert step_0.groups_generated == 6 and step_0.rollouts_generated == 6 * 4
    assert any("zero advantages" in a for a in step_0.alerts) and step_0.groups_trained == 0
    # Refills were screened by stage 2 with the real actor's prompt entropy.
    stage2 = decisions(run, "hive.stage2").filter(step=0)
    assert stage2.count() > 2 and step_0.forward_tokens_extra > 0
    assert all(np.isfinite(d.scores["entropy"]) and d.scores["entropy"] > 0 for d in stage2)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED


def test_hora_and_rlzvp_merge_their_groups_and_a_stuck_rollout_fails_the_run_with_the_reason(
        tmp_path, reporting, claimed_verl_run):
    run = claimed_verl_run
    # Rewards stall (never return) after the pre-training validation (2 prompts x 2) and the
    # first step (2 prompts x 4): step 2's probe never finishes.
    # The gradient clip is tiny: RL-ZVP's shaped advantages give gradients, the clip (read where
    # verl reads it, actor.optim.clip_grad) makes their update vanish.
    job = run_job(tmp_path, {"hora": {"n0": 2}, "rlzvp": {}}, env={**reporting, "EDGEPLANE_TEST_STALL_AFTER": "12"},
                  steps=3, grad_clip=1e-12, overrides=(*reward("stalling"), "++edgeplane.rollout_timeout_s=20"))
    assert job.process.returncode != 0
    updates = job.weight_updates()[1:]  # after step 1
    assert updates and max(updates) < CLIPPED_UPDATE_MAX, updates
    step_0 = StepSummary.objects.get(run_id=run.id, step=0)
    assert step_0.rollouts_generated == 2 * 4  # B x N in all: n0 each, the rest allocated
    assert step_0.groups_generated == 2  # each prompt's extras merged into its probe group
    allocations = decisions(run, "hora.").filter(step=0)
    assert allocations.exists()
    zero_variance = step_0.groups_all_correct + step_0.groups_all_wrong
    assert decisions(run, "rlzvp.").filter(step=0).count() == zero_variance
    assert step_0.metrics.get("rlzvp/shaped_rollouts", 0) == sum(
        d.scores["group_size"] for d in decisions(run, "rlzvp.").filter(step=0))
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "did not finish within 20 s" in run.status_reason, run.status_reason
    assert steps_of(run) == [0]


def test_lze_prunes_at_the_epoch_boundary_replays_first_and_trains_the_top_k(tmp_path, reporting, claimed_verl_run):
    run = claimed_verl_run
    # 6 prompts, B = 2: epoch 0 is steps 0-2, epoch 1 opens at step 3. Rewards by prompt: even
    # keys always solved (pruned after one all-correct epoch), odd never.
    job = run_job(tmp_path, {"lze": {"prune": True, "t_prune": 1, "replay_ratio": 0.5}}, env=reporting,
                  steps=6, task_train_size=6, checkpoint_every=6, overrides=reward("by_prompt"))
    assert job.process.returncode == 0, job.log_tail()
    pruned = {d.prompt_key for d in decisions(run, "lze.pruned")}
    replayed = [d for d in decisions(run, "lze.replayed")]
    assert pruned and all(int(k.rsplit(":", 1)[1]) % 2 == 0 for k in pruned)
    assert replayed and {d.prompt_key for d in replayed} <= pruned
    by_step: dict[int, set[str]] = {}
    for step, key in PromptObservation.objects.filter(run_id=run.id).values_list("step", "prompt_key"):
        by_step.setdefault(step, set()).add(key)
    replay_step = min(d.step for d in replayed)
    assert {d.prompt_key for d in replayed} <= by_step[replay_step]  # replays rolled out first
    never = pruned - {d.prompt_key for d in replayed}
    audited: dict[int, set[str]] = {}
    for d in decisions(run, "audit.uniform"):
        audited.setdefault(d.step, set()).add(d.prompt_key)
    for step in range(replay_step, 6):
        # pruned, not replayed: never rolled out, unless drawn as a uniform audit (docs/savings.md)
        assert not (never & by_step.get(step, set())) - audited.get(step, set())
    for summary in StepSummary.objects.filter(run_id=run.id):
        assert summary.groups_trained <= max(1, int(np.ceil(0.4 * summary.groups_generated)))  # backward top-K
        assert summary.groups_trained < summary.groups_generated or summary.groups_generated == 1


def test_greso_skips_by_history_and_dapo_alone_stops_at_its_generation_cap(tmp_path, reporting, claimed_verl_run):
    run = claimed_verl_run
    # GRESO over 4 prompts, B = 2: every group all-wrong, so from their second visit on GRESO
    # skips prompts before rollout; the dataset runs out inside steps, which train on what they got.
    greso = run_job(tmp_path / "greso", {"greso": {}}, env=reporting, steps=4, task_train_size=4)
    assert greso.process.returncode == 0, greso.log_tail()
    assert steps_of(run) == [0, 1, 2, 3]
    assert decisions(run, "greso.hard_skipped").exists(), list(
        SelectionDecision.objects.filter(run_id=run.id).values_list("reason", flat=True).distinct())

    # DAPO alone, at most 2 generation batches of B prompts a step (verl 0.9.1 ignores
    # max_num_gen_batches; the trainer enforces it): every group all-wrong, so each step hits it.
    dapo = run_job(tmp_path / "dapo", {"dapo": {"max_gen_batches": 2}}, steps=2, task_train_size=40)
    assert dapo.process.returncode == 0, dapo.log_tail()
    logged = [m for m in dapo.metrics() if "edgeplane/step" in m]
    assert len(logged) == 2
    assert all(m["edgeplane/rollouts_generated"] == 2 * 2 * 4 for m in logged)  # the cap: 2 x B prompts x N
    assert "the generation cap (4 prompts: max_gen_batches x B) is reached" in dapo.log()
