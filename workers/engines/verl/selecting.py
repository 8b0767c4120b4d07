"""Prompt selection inside verl: the candidate pool, epochs, and the pre-rollout layer.

``PromptSelection`` is a mixin of ``trainer.EdgeplaneTrainer``. It owns which prompts a step
rolls out: it draws candidates from verl's dataloader through a ``PromptPool``, screens them
with the pipeline's pre-rollout selectors (``StepSelection.pre_rollout``: GRESO, HIVE, LZE's
pruner; HIVE's stage 2 is a prompt-entropy forward pass of the actor, ``entropy.py``) and gives
exactly the number verl asks for. It opens each step's ``StepWork`` (``_open_step``) and caps
verl's refills at ``max_gen_batches`` x B (``_generation_cap``).

A step's first batch is selected ahead (``_select_ahead``), which the trainer calls in
``on_init_end`` and in ``on_step_end`` of the step before, ahead of ``super().on_step_end()``
waking vLLM: in colocated sync mode HIVE's forward pass then has the GPU memory vLLM gave up in
``on_sample_end``. When the run stops, ``_abandon_ahead`` gives that batch back.

verl hooks it overrides (verl's base class calls them by name):

- ``_init_dataloader``: verl's, then the candidate pool over the train dataset;
- ``_fetch_one_gen_batch``: verl's, noting when the dataloader wraps (the next step opens an epoch);
- ``_add_prompts_to_generate``: the replay buffer's ``refill_fn`` (verl's group filter evicted
  groups): screened too, and bounded by the generation cap.

Its state: ``epoch``, ``dataloader_wrapped``, ``prompt_pool``, ``work`` (the step being rolled out
and trained, read by every concern), ``selected_ahead`` and ``ahead_seconds``. It reads the
trainer's ``pipeline`` and verl's ``config``, ``train_dataset``, ``tokenizer``,
``actor_rollout_wg``, ``global_steps`` and ``replay_buffer``; it submits through
``_submit_batch_to_rollout`` (``allocating.py``) and stops selecting ahead once ``control``
(``closing.py``) says the run ends.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import verl.utils.tensordict_utils as tu
from tensordict import TensorDict

from workers.engines.verl import entropy
from workers.engines.verl.prompts import PromptPool, Row, RowRef, join_rows, row_keys
from workers.engines.verl.sampler import EdgeplaneReplayBuffer
from workers.record import Control
from workers.selection.pipeline import MAX_DRAW_FACTOR, StepSelection


@dataclass
class StepWork:
    """One step's selection and what the trainer counts for it. A step's first batch is
    selected during the step before (``_select_ahead``), so two can be open at once."""

    number: int  # verl's global step
    selection: StepSelection
    submitted_keys: set[str] = field(default_factory=set)  # prompts rolled out this step
    prompts_submitted: int = 0
    select_seconds: float = 0.0
    forward_tokens_extra: int = 0
    rollouts_effective: int = 0
    pending_decisions: list = field(default_factory=list)  # carried in from the pipeline (epoch events)


class PromptSelection:
    """Which prompts each step rolls out (see the module docstring); a mixin of ``EdgeplaneTrainer``."""

    epoch: int
    dataloader_wrapped: bool  # the dataloader wrapped: the next step opens a new epoch
    prompt_pool: PromptPool | None
    work: StepWork | None  # the step being rolled out and trained
    selected_ahead: tuple[StepWork, TensorDict] | None
    ahead_seconds: float  # wall time this step spent selecting the next one (counted there)

    def _setup_selection(self) -> None:
        """The state above (``EdgeplaneTrainer.__init__``); the pool comes with verl's dataloader in ``init()``."""
        self.epoch = 0
        self.dataloader_wrapped = False
        self.work = None
        self.prompt_pool = None
        self.selected_ahead = None
        self.ahead_seconds = 0.0

    @property
    def step_selection(self) -> StepSelection | None:
        return self.work.selection if self.work is not None else None

    # -- data: the candidate pool, epochs -----------------------------------------------------
    def _init_dataloader(self) -> None:
        super()._init_dataloader()
        self.prompt_pool = PromptPool(self._fetch_one_gen_batch, self._dataset_rows, self._dataset_keys())

    def _dataset_keys(self) -> list[str]:
        frame = self.train_dataset.dataframe
        if "key" in frame.column_names:
            return [str(k) for k in frame["key"]]
        return [str(e["key"]) if e.get("key") is not None else f"index:{e.get('index')}" for e in frame["extra_info"]]

    def _dataset_rows(self, indices: list[int]) -> TensorDict:
        from verl.utils.dataset.rl_dataset import collate_fn

        batch_dict = collate_fn([self.train_dataset[i] for i in indices])
        batch_dict["uid"] = np.array([str(uuid.uuid4()) for _ in indices], dtype=object)
        return tu.get_tensordict(batch_dict)

    def _fetch_one_gen_batch(self) -> TensorDict:
        """verl's ``_fetch_one_gen_batch`` (trainer_base.py), noting when the dataloader wraps:
        the next step opens a new epoch (as the embedded engine does)."""
        if self.train_dataloader_it is None:
            self.train_dataloader_it = iter(self.train_dataloader)
        try:
            batch_dict = next(self.train_dataloader_it)
        except StopIteration:
            self.dataloader_wrapped = True
            self.train_dataloader_it = iter(self.train_dataloader)
            batch_dict = next(self.train_dataloader_it)
        batch_dict["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(batch_dict["raw_prompt"]))], dtype=object)
        return tu.get_tensordict(batch_dict)

    def _next_epoch(self) -> None:
        """LZE prunes at the end of an epoch and replays some pruned prompts at the start."""
        self.dataloader_wrapped = False
        self.pipeline.end_epoch(self.epoch)
        self.epoch += 1
        replays = self.pipeline.start_epoch(self.epoch)
        if replays and self.prompt_pool is not None:
            self.prompt_pool.put_back(self.prompt_pool.rebuild(replays))

    # -- pre-rollout ---------------------------------------------------------------------------
    def _open_step(self, step_number: int) -> StepWork:
        """A new step's selection (possibly ahead, in on_step_end of the step before)."""
        if self.dataloader_wrapped:
            self._next_epoch()
        pending = list(self.pipeline._pending)
        # Our step numbers count completed steps like the embedded engine's (0 is the first);
        # verl's global_steps counts from 1.
        selection = self.pipeline.begin_step(step_number - 1, self.epoch)
        return StepWork(step_number, selection, pending_decisions=pending)

    def _select_prompts(self, work: StepWork, n: int, *, refill: bool = False) -> TensorDict | None:
        """Up to ``n`` prompts for rollout, screened by the pre-rollout selectors. A step's first
        batch is exactly ``n``; a refill of verl's group filter may get fewer (the dataset has
        no more distinct prompts this step): None when it gets none."""
        assert self.prompt_pool is not None
        start = time.perf_counter()
        step, pool = work.selection, self.prompt_pool
        drawn: dict[str, RowRef] = {}
        taken = work.submitted_keys
        step.set_round_target(n)
        draw_limit = MAX_DRAW_FACTOR * self.pipeline.batch_size
        while True:
            rows = pool.take(step.request_size(), exclude=taken | drawn.keys())
            drawn.update(rows)
            if not rows:
                step.loader_exhausted()

            def prompt_entropy(keys: list[str]) -> np.ndarray:
                return self._prompt_entropy(work, [drawn[k] for k in keys])

            round_ = step.pre_rollout([k for k, _ in rows], prompt_entropy=prompt_entropy)
            pool.put_back([(k, drawn[k]) for k in round_.deferred])
            if round_.keys or not rows or step.candidates_drawn >= draw_limit:
                break
        chosen: list[Row] = [(k, drawn[k]) for k in round_.keys]
        if len(chosen) < n:
            # The filters kept too few within the draw limit. verl's sync loop waits for the
            # prompts it asked for, so the rest go unscreened, and the step says so.
            fill = pool.take(n - len(chosen), exclude=taken | {k for k, _ in chosen})
            step.alerts.append(f"pre-rollout filters kept {len(chosen)} of {n} prompts from "
                               f"{step.candidates_drawn} drawn; {len(fill)} more rolled out unscreened")
            chosen.extend(fill)
        work.select_seconds += time.perf_counter() - start
        if len(chosen) < n and not refill:
            raise RuntimeError(f"the train dataset cannot give {n} distinct prompts for one step "
                               f"({len(chosen)} found): lower data.train_batch_size or add prompts")
        if not chosen:
            return None
        work.submitted_keys |= {k for k, _ in chosen}
        return join_rows(chosen)

    def _prompt_entropy(self, work: StepWork, rows: list[RowRef]) -> np.ndarray:
        """HIVE stage 2: one forward pass of the actor over the candidates' prompts."""
        raw = [row.field("raw_prompt") for row in rows]
        ids = entropy.prompt_token_ids(self.tokenizer, raw)
        work.forward_tokens_extra += sum(len(i) for i in ids)
        return entropy.actor_prompt_entropy(
            ids, compute_log_prob=self.actor_rollout_wg.compute_log_prob,
            pad_to_multiple=lambda meta: entropy.pad_to_multiple(meta, self._probe_multiple()),
            temperature=float(self.config.actor_rollout_ref.rollout.temperature),
        )

    def _probe_multiple(self) -> int:
        """Rows the HIVE probe must come in multiples of: verl's dispatch splits it into one equal
        chunk per data-parallel rank, and each rank's engine into micro-batches of
        ``log_prob_micro_batch_size_per_gpu`` (it asserts divisibility unless batch sizes are
        dynamic). A PPO mini-batch multiple, what ``_balance_batch`` pads to, would add up to
        B x N - 1 rows of forward pass for nothing."""
        worker_group = self.actor_rollout_wg
        if "actor" not in worker_group._dispatch_info:  # as verl's _balance_batch reads it
            worker_group._dispatch_info["actor"] = worker_group._query_dispatch_info("actor")
        dp = max(worker_group._dispatch_info["actor"]) + 1
        rollout = self.config.actor_rollout_ref.rollout
        dynamic = rollout.get("log_prob_use_dynamic_bsz", False)
        micro = 1 if dynamic else int(rollout.log_prob_micro_batch_size_per_gpu or 1)
        return dp * micro

    def _select_ahead(self) -> None:
        """Select the next step's first batch now (the module docstring says why: GPU memory)."""
        next_step = self.global_steps + 1
        if next_step > self.total_training_steps or self.control != Control.CONTINUE:
            return
        start = time.perf_counter()
        work = self._open_step(next_step)
        self.selected_ahead = (work, self._select_prompts(work, int(self.config.data.train_batch_size)))
        self.ahead_seconds += time.perf_counter() - start

    def _abandon_ahead(self) -> None:
        """The run stops after this step: the batch selected ahead goes back to the pool and the
        epoch decisions it carried back to the pipeline, so a checkpoint keeps both."""
        if self.selected_ahead is None:
            return
        work, batch = self.selected_ahead
        self.selected_ahead = None
        if self.prompt_pool is not None and batch is not None:
            self.prompt_pool.put_back(self.prompt_pool.rebuild([str(k) for k in row_keys(batch)]))
        self.pipeline._pending = [*work.pending_decisions, *self.pipeline._pending]
        self.pipeline.step = work.selection.step

    def _generation_cap(self) -> int:
        """Prompts one step may roll out when verl's group filter refills (0: no cap).

        verl 0.9.1's V1 ignores ``filter_groups.max_num_gen_batches`` and refills until it has B
        groups; docs/algorithms.md §1 bounds a step at ``max_gen_batches`` batches of B prompts, then
        trains on what was collected. So the cap is ours: ``max_gen_batches`` x B.
        """
        rounds = int(self.work.selection.max_rounds) if self.work is not None else 0
        return rounds * int(self.config.data.train_batch_size) if rounds > 0 else 0

    # -- verl's refill (the replay buffer's refill_fn) -----------------------------------------
    def _add_prompts_to_generate(self, num_prompts: int) -> int:
        """The replay buffer's refill (verl's group filter evicted groups): screened too, and
        bounded by the generation cap. Past the cap, or when the dataset has no more distinct
        prompts this step, the buffer stops collecting and the step trains on what it has."""
        work = self.work
        if work is None:
            return super()._add_prompts_to_generate(num_prompts)
        buffer = self.replay_buffer
        assert isinstance(buffer, EdgeplaneReplayBuffer)
        if buffer.collection_closed:
            return 0
        cap = buffer.cap
        allowed = num_prompts if not cap else max(0, min(num_prompts, cap - work.prompts_submitted))
        batch = self._select_prompts(work, allowed, refill=True) if allowed else None
        submitted = self._submit_batch_to_rollout(batch) if batch is not None else 0
        if submitted < num_prompts:
            why = (f"the generation cap ({cap} prompts: max_gen_batches x B) is reached" if allowed < num_prompts
                   else "the dataset has no more distinct prompts for this step")
            work.selection.alerts.append(f"verl's group filter asked for {num_prompts} more prompts and got "
                                         f"{submitted}: {why}; training on the groups collected")
            buffer.close_collection()
        return submitted
