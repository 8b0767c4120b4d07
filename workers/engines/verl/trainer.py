"""Edgeplane's trainer inside verl 0.9.1's V1 sync trainer, and the TaskRunner that builds it.

``EdgeplaneTrainer`` subclasses ``PPOTrainerSync`` (v1/trainer_sync.py) and keeps
``trainer.v1.trainer_mode = sync``: verl's base class branches on that string
(trainer_base.py, e.g. ``_build_replay_buffer`` and ``_submit_batch_to_rollout``), so the
class is chosen by our ``EdgeplaneTaskRunner``, not by the mode. It is also registered as
``edgeplane_sync`` in verl's ``TRAINER_REGISTRY`` for lookups.

The class composes one mixin per concern, each in its own module whose docstring says what
it owns and which verl hooks it overrides. They are mixins, not collaborator objects, because
verl's base class calls the overridden methods by name on the trainer (``_init_dataloader``,
``_fetch_one_gen_batch``, ``_add_prompts_to_generate``, ``_submit_batch_to_rollout``,
``_compute_advantage``, ``_load_checkpoint``, ``_validate``), and each override reaches
verl's own through ``super()``:

- ``selecting.PromptSelection``: the candidate pool, epochs, the pre-rollout layer, refills;
- ``allocating.TwoPhaseRollout``: every submission to rollout, HORA's two phases;
- ``shaping.AdvantageShaping``: the advantage method's adapter, HORA's loss weights;
- ``closing.StepClosing``: the ledger, the step record, the control plane's answer, the run's
  start and end;
- ``checkpoint.SelectionCheckpoint``: the selection state saved with verl's checkpoints.

What stays here is verl's step lifecycle, which calls into them. One verl step drives the
selection ``Pipeline`` (built from ``edgeplane.methods``) through the same cycle as the
embedded engine (workers/selection/pipeline.py). The trainer names no method: it asks the
pipeline what runs at each layer (``allocator``, ``probe_size``, ``advantage``); the one layer
verl computes itself, the advantage, goes through the adapter table of ``methods.py``:

1. **Pre-rollout** (GRESO, HIVE, LZE's pruner), in ``prepare_step``: the step's first batch of
   ``train_batch_size`` screened prompts, selected ahead in ``on_step_end`` of the step before
   (and ``on_init_end``), before ``super().on_step_end()`` wakes vLLM (HIVE's forward pass
   then has vLLM's GPU memory); every refill of verl's group filter is screened too and capped
   at ``max_gen_batches`` x B (``selecting.py``).
2. **Allocation** (HORA), in ``prepare_step``: probe with n0 rollouts a prompt, wait, allocate
   the rest of B x N, send the extras as their own prompt groups (``allocating.py``); every
   wait for rollouts ends after ``edgeplane.rollout_timeout_s`` with ``RolloutTimeout``.
3. **Post-rollout** (the zero-variance filter, LZE backward selection) in the replay buffer
   ``sampler.EdgeplaneReplayBuffer`` (``_build_replay_buffer``). The filter is verl's own
   ``algorithm.filter_groups`` (set by the launcher for DAPO and for the history filters'
   post-filter), so verl refills; the buffer merges HORA's extras into their probe group.
4. **Advantage**: verl's GRPO, then the advantage method's adapter (RL-ZVP), then HORA's
   N / G_i loss weight (``shaping.py``).
5. **Close**: at the end of ``step()`` the ledger records every group generated (before
   verl's checkpoint of the step saves it); in ``on_step_end``, after verl's checkpoint and
   weight sync (whose seconds it then carries), the step record goes to the control plane and
   a ``cancel`` or ``stop_budget`` answer is obeyed at this step boundary: a checkpoint is
   saved and the loop ends (``closing.py``). ``fit`` reports the run's start and end.

Selector state (ledger, every method's state, the epoch and the candidates given back) is
saved by ``checkpoint.SelectionCheckpointCallback`` and restored after verl's own
``_load_checkpoint`` (``checkpoint.SelectionCheckpoint``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from workers.engines.keepalive import Keepalive, SerialisedSink
from workers.engines.verl.allocating import TwoPhaseRollout
from workers.engines.verl.checkpoint import SelectionCheckpoint
from workers.engines.verl.closing import StepClosing
from workers.engines.verl.edgeplane_config import build_pipeline
from workers.engines.verl.sampler import EdgeplaneReplayBuffer
from workers.engines.verl.selecting import PromptSelection
from workers.engines.verl.shaping import AdvantageShaping

TRAINER_NAME = "edgeplane_sync"


@register_trainer(TRAINER_NAME)
class EdgeplaneTrainer(PromptSelection, TwoPhaseRollout, AdvantageShaping, StepClosing, SelectionCheckpoint,
                       PPOTrainerSync):
    """verl's sync trainer with Edgeplane's selectors at their layers and its telemetry."""

    def __init__(self, config: Any) -> None:
        self.pipeline = build_pipeline(config)  # every concern asks it what runs at its layer
        self._setup_selection()
        self._setup_rollout(config)
        self._setup_closing(config)
        super().__init__(config)
        if self.parameter_sync_step != 1:
            # One selection step is one update here: several local updates per step would
            # need the post-rollout selection split across them.
            raise ValueError(f"trainer.v1.sync.parameter_sync_step = {self.parameter_sync_step}: Edgeplane's "
                             "trainer runs one update per step; set it to 1")

    # -- the replay buffer: verl's arguments, our class ---------------------------------------
    def _build_replay_buffer(self) -> ReplayBuffer:
        """verl's own construction (DAPO filter, refill function, batch sizes included),
        with ``EdgeplaneReplayBuffer`` in place of the built-in class: the arguments verl
        passes a custom sampler lack the filter, which the post-filter needs."""
        import verl.trainer.ppo.v1.trainer_base as base

        builtin = base.ReplayBuffer
        base.ReplayBuffer = EdgeplaneReplayBuffer  # read once by super() below: "sampler_cls is ReplayBuffer"
        try:
            buffer = super()._build_replay_buffer()
        finally:
            base.ReplayBuffer = builtin
        assert isinstance(buffer, EdgeplaneReplayBuffer), "a custom sampler replaces Edgeplane's replay buffer"
        buffer.timeout_s = self.rollout_timeout_s
        return buffer

    # -- verl's step lifecycle ------------------------------------------------------------------
    def on_init_end(self) -> None:
        """Select the first step's batch, then verl's weight sync wakes vLLM."""
        self._select_ahead()
        super().on_init_end()

    def on_step_begin(self) -> None:
        """The step's wall clock starts (``on_step_end`` reports it, less the next step's selection)."""
        self.step_started = time.perf_counter()
        self.ahead_seconds = 0.0
        super().on_step_begin()

    def prepare_step(self) -> dict:
        """The replay buffer opens the step's post-rollout selection, and the step's prompts
        (selected ahead, or now) go out to rollout: at once, or in HORA's two phases."""
        ahead = self.selected_ahead
        self.selected_ahead = None
        if ahead is not None and ahead[0].number == self.global_steps:
            work, batch = ahead
        else:
            work = self._open_step(self.global_steps)
            batch = self._select_prompts(work, int(self.config.data.train_batch_size))
        self.work = work
        assert isinstance(self.replay_buffer, EdgeplaneReplayBuffer)
        self.replay_buffer.open_step(work.selection, cap=self._generation_cap())
        if self.pipeline.allocator is not None:
            self._rollout_in_two_phases(work, batch)
        else:
            self._submit_batch_to_rollout(batch)
        return {"edgeplane/prompts_submitted": float(work.prompts_submitted),
                "edgeplane/candidates_drawn": float(work.selection.candidates_drawn)}

    def step(self, metrics: dict, timing_raw: dict):
        """verl's step (sample, advantage, update), then the ledger closes the step's selection and
        its record is staged on disk until on_step_end reports it (http_sink: a step closed but
        not reported)."""
        batch = super().step(metrics, timing_raw)
        # The ledger takes the step now, before verl's checkpoint of this step saves it; the
        # record goes out in on_step_end, once verl's checkpoint and weight sync are timed.
        self.closing = self._close_selection(timing_raw)
        self.step_metrics = metrics
        self._stage_step(self.closing, metrics, timing_raw)
        return batch

    def on_step_end(self) -> None:
        """Select ahead, sync weights (verl), then report the step: its record then carries the
        checkpoint and weight-sync seconds, which verl times after ``step()`` returns."""
        self._select_ahead()
        super().on_step_end()
        closing, self.closing = self.closing, None
        if closing is not None:
            wall = time.perf_counter() - self.step_started - self.ahead_seconds
            self._report_step(closing, self.step_metrics or {}, {**self.timing_raw, "step": wall})

    def fit(self, agent_loop_manager) -> None:
        """verl's loop between the run's start and end reports; a failure in it is reported, then raised.

        Meanwhile a keepalive thread posts heartbeats (``workers.engines.keepalive``): a step,
        evaluation or checkpoint longer than the control plane's stale threshold is not taken
        for a lost job. The sink is shared with it one call at a time."""
        if self.sink is not None:
            self.sink = SerialisedSink(self.sink)
        self.report_start()
        with Keepalive(self.sink) if self.sink is not None else contextlib.nullcontext():
            try:
                super().fit(agent_loop_manager)
            except BaseException as exc:
                self.report_end(failure=exc)
                raise
        self.report_end()


def _task_runner_class():
    """``TaskRunnerV1`` (verl/trainer/main_ppo.py) building ``EdgeplaneTrainer``.

    verl's runner picks the class by ``trainer.v1.trainer_mode`` from ``TRAINER_REGISTRY``;
    ours keeps the mode ``sync`` and builds our subclass. The rest of ``run`` is verl's:
    TransferQueue init, ``trainer.init()``, the agent-loop manager, ``fit``, ``tq.close()``.
    """
    import ray
    from verl.trainer.main_ppo import TaskRunnerV1

    base = TaskRunnerV1.__ray_metadata__.modified_class  # the plain class under @ray.remote

    class EdgeplaneTaskRunner(base):  # type: ignore[misc, valid-type]
        def run(self, config):
            from omegaconf import OmegaConf

            config.transfer_queue.enable = True
            OmegaConf.resolve(config)
            self.config = config
            tq.init(config.transfer_queue)
            succeeded = False
            try:
                self.trainer = EdgeplaneTrainer(config=config)
                self.trainer.init()
                self.init_agent_loop_manager()
                self.trainer.fit(self.agent_loop_manager)
                succeeded = True
            finally:
                try:
                    tracking = getattr(self.trainer, "logger", None)
                    if tracking is not None:
                        tracking.finish(exit_code=0 if succeeded else 1)
                finally:
                    tq.close()

    return ray.remote(EdgeplaneTaskRunner)
