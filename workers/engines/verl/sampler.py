"""Post-rollout selection as verl 0.9.1's replay buffer: every group seen, the kept ones trained.

verl's V1 sync trainer gets its training batch from ``ReplayBuffer.sample`` (v1/replay_buffer.py):
it polls TransferQueue until ``batch_size`` prompt groups are finished, evicts the groups its
DAPO filter (``algorithm.filter_groups``) finds zero-variance and refills them through
``refill_fn``, then asks ``_select_prompt_uids`` which finished groups make the batch.

``EdgeplaneReplayBuffer`` is that buffer with the step's ``StepSelection`` attached
(``open_step``, by ``trainer.EdgeplaneTrainer`` each step):

- groups verl's filter evicts are read before they are cleared (``_evict_terminal_groups``),
  so the ledger sees every group generated, not only the trained ones;
- at selection, every group of the step goes to ``StepSelection.add_groups`` (the
  post-filter's decisions: zero-variance, surplus) and ``finish`` (LZE backward selection:
  learning-zone energy from the ledger, Gumbel top-K); groups not trained are cleared from
  TransferQueue, as verl clears DAPO's surplus, so they never reach a later step off-policy;
- HORA's extra rollouts (their own prompt groups, ``expect_extras``) are merged into their
  probe group before selection, and their trajectories' ``uid`` is rewritten to the probe
  group's, so verl's advantage step sees one group of n0 + m_i rollouts;
- verl's group filter (DAPO's or the history filters' post-filter) evicts zero-variance groups
  and refills; their trajectories are kept in TransferQueue until the step's selection (not
  sampleable meanwhile), so when collection closes (the trainer's generation cap, or a dataset
  with no more distinct prompts this step) the step trains on what it collected, whatever
  that is, rather than crash or poll for ever;
- every wait has a deadline (``timeout_s``): rollouts that never finish fail the run with a
  reason instead of hanging it;
- the ``val`` partition, and a buffer with no step open, keep verl's own behaviour.

Each group's stable prompt key is the ``extra_info.key`` the launcher's parquet export writes
(the uid when absent). ``outcomes`` maps the step's uids to their ``GroupOutcome`` for the
trainer, which adds response entropies once verl has computed them.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

from workers.selection.pipeline import GroupOutcome, StepSelection


def read_outcomes(partition: dict[str, dict], partition_id: str, uids: list[str],
                  known_keys: dict[str, str] | None = None) -> dict[str, GroupOutcome]:
    """Each group's rewards (``rm_scores`` sums, as verl's DAPO filter reads them), response
    lengths and stable prompt key; groups with no trajectory (rollout failures) are left out.

    ``known_keys`` (uid -> stable key, as submitted) spares reading ``extra_info``, the
    costliest field, when it covers every group.
    """
    wanted = set(uids)
    keys = [k for k in partition if k.split("_")[0] in wanted]
    if not keys:
        return {}
    stable: dict[str, str] = dict(known_keys or {})
    need_info = not wanted <= stable.keys()
    fields = ["rm_scores", "response_mask", *(["extra_info"] if need_info else [])]
    data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=fields)
    infos = list(data["extra_info"]) if need_info and "extra_info" in data else [None] * len(keys)
    rewards: dict[str, list[float]] = {}
    lengths: dict[str, list[int]] = {}
    for key, score, mask, info in zip(keys, data["rm_scores"], data["response_mask"], infos, strict=True):
        uid = key.split("_")[0]
        rewards.setdefault(uid, []).append(float(score.sum().item()))
        lengths.setdefault(uid, []).append(int(mask.sum().item()))
        info = getattr(info, "data", info)
        if isinstance(info, dict) and info.get("key") is not None:
            stable[uid] = str(info["key"])
    return {uid: GroupOutcome(stable.get(uid, uid), np.asarray(rewards[uid]), np.asarray(lengths[uid]))
            for uid in uids if uid in rewards}


class RolloutTimeout(RuntimeError):
    """A step's rollouts did not finish within the deadline."""


class _SelectNow(Exception):
    """Collection is closed and nothing is in flight: select from what was collected."""


class EdgeplaneReplayBuffer(ReplayBuffer):
    """verl's sync replay buffer whose train batches are the step's selected groups."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_selection: StepSelection | None = None
        self.outcomes: dict[str, GroupOutcome] = {}  # uid -> outcome, this step's groups
        self._evicted: list[str] = []  # uids verl's filter evicted this step, in order
        self.filtered: set[str] = set()  # those of them still held in TransferQueue
        self.parent_of: dict[str, str] = {}  # HORA: extra group's uid -> its probe group's uid
        self.submitted_keys: dict[str, str] = {}  # uid -> stable prompt key, as the trainer submitted
        self.cap = 0  # prompts this step may roll out (0: no cap); enforced by the trainer's refill
        self.collection_closed = False
        self.timeout_s = 3600.0
        self._deadline = float("inf")

    def open_step(self, step: StepSelection, cap: int = 0) -> None:
        self.step_selection = step
        self.outcomes = {}
        self._evicted = []
        self.filtered = set()
        self.parent_of = {}
        self.submitted_keys = {}
        self.cap = int(cap)
        self.collection_closed = False

    def close_collection(self) -> None:
        """No more refills this step: zero-variance groups that finish from now on stay in the
        batch, and once nothing is in flight the step selects from what it has."""
        self.collection_closed = True

    def note_submitted(self, uids: list[str], keys: list[str]) -> None:
        self.submitted_keys.update(zip(uids, keys))

    def expect_extras(self, parent_of: dict[str, str]) -> None:
        """HORA's extra groups of this step: the batch waits for them too."""
        self.parent_of.update(parent_of)

    def _ours(self, partition_id: str) -> bool:
        return partition_id != "val" and self.step_selection is not None

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        self._deadline = time.monotonic() + self.timeout_s
        if not self._ours(partition_id):
            return super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        batch_size += len(self.parent_of)
        try:
            return super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        except _SelectNow:
            return self._sample_collected(global_steps, partition_id, batch_size)

    def _sample_collected(self, global_steps: int, partition_id: str, batch_size: int):
        """verl's selection and materialisation over every group collected this step (fewer
        than B mixed ones: collection closed early). The selection drops what is not trained."""
        self._sync_metadata_from_transfer_queue()
        reasons = self._terminal_eviction_reasons(global_steps, partition_id)
        self._evict_terminal_groups(global_steps, partition_id, reasons)
        sampleable = self._sampleable_terminal_keys(partition_id, reasons) | self.filtered
        selected, snapshot, _steps = self._select_prompt_uids(partition_id, sampleable, batch_size)
        surplus = sampleable - set(selected)
        if surplus:
            self._clear_groups(partition_id, surplus)
        if not selected:
            raise RuntimeError("no rollout finished this step (every prompt group failed): see the rollout "
                               "workers' logs")
        return self._materialize_batch(partition_id, selected, snapshot), {
            "training/filter_groups/collection_closed": 1.0}

    def _wait_for_next_poll(self, partition_id: str, last_debug_time: float) -> float:
        if self._ours(partition_id) and self.collection_closed and not (
                self.pending_keys[partition_id] or self.running_keys[partition_id]):
            raise _SelectNow
        if time.monotonic() > self._deadline:
            raise RolloutTimeout(
                f"the step's rollouts did not finish within {self.timeout_s:.0f} s (edgeplane.rollout_timeout_s): "
                f"{len(self.pending_keys[partition_id])} prompt groups pending, "
                f"{len(self.running_keys[partition_id])} running, {len(self.finished_keys[partition_id])} finished "
                f"in partition {partition_id!r}; check the rollout workers' logs")
        return super()._wait_for_next_poll(partition_id, last_debug_time)

    def _terminal_eviction_reasons(self, global_steps: int, partition_id: str):
        stale, dapo, failed, counts = super()._terminal_eviction_reasons(global_steps, partition_id)
        if self._ours(partition_id):
            # Held groups were evicted once already; after collection closes nothing more is.
            dapo = set() if self.collection_closed else dapo - self.filtered
            counts = Counter() if not dapo else counts
        return stale, dapo, failed, counts

    def _sampleable_terminal_keys(self, partition_id: str, eviction_reasons: Any) -> set[str]:
        keys = super()._sampleable_terminal_keys(partition_id, eviction_reasons)
        return keys - self.filtered if self._ours(partition_id) else keys

    def _evict_terminal_groups(self, global_steps: int, partition_id: str, eviction_reasons: Any):
        """Groups verl's filter evicts are read (the ledger sees every group) and held in
        TransferQueue, not cleared: verl counts them as evicted and refills."""
        if not self._ours(partition_id):
            return super()._evict_terminal_groups(global_steps, partition_id, eviction_reasons)
        stale, dapo, failed, _counts = eviction_reasons
        held = dapo - stale - failed
        ordered = sorted(held, key=lambda u: self.prompt_global_steps[partition_id].get(u, 0))
        self.outcomes.update(read_outcomes(self.partitions[partition_id], partition_id, ordered, self.submitted_keys))
        self._evicted.extend(u for u in ordered if u in self.outcomes)
        self.filtered |= held
        evicted, stale_count, _none, metrics = super()._evict_terminal_groups(
            global_steps, partition_id, (stale, dapo & (stale | failed), failed, Counter()))
        if held:
            prefix = self._metrics_prefix(partition_id)
            metrics[f"{prefix}/filter_groups/evicted_samples"] = len(held)
        return evicted | held, stale_count, len(held), metrics

    def _select_prompt_uids(self, partition_id: str, sampleable_keys: set[str], batch_size: int):
        selected, snapshot, steps = super()._select_prompt_uids(partition_id, sampleable_keys, batch_size)
        step = self.step_selection
        if partition_id == "val" or step is None:
            return selected, snapshot, steps
        # verl's choice first (it fills the batch), then the surplus it leaves: the post-filter
        # keeps mixed groups up to B in this order, so it agrees with verl's DAPO selection.
        surplus = sorted(sampleable_keys - set(selected), key=lambda u: steps.get(u, 0))
        self.outcomes.update(read_outcomes(self.partitions[partition_id], partition_id, [*selected, *surplus],
                                           self.submitted_keys))
        children = self._merge_extras(partition_id)
        order = [u for u in dict.fromkeys([*self._evicted, *selected, *surplus]) if u in self.outcomes]
        step.add_groups([self.outcomes[u] for u in order])
        trained = {id(g) for g in step.finish().groups}
        kept = [u for u in order if id(self.outcomes[u]) in trained]
        if not kept:
            # Nothing to learn from (e.g. every group zero-variance and no post-filter refill):
            # train on verl's batch, whose GRPO advantages are 0, rather than stall the trainer.
            step.alerts.append("no group selected for the update; training on verl's batch (zero advantages)")
            kept = [u for u in selected if u not in self.parent_of]
        with_extras = [*kept, *(c for u in kept for c in children.get(u, []))]
        dropped = (set(order) | self.filtered) - set(kept)
        self._clear_groups(partition_id, dropped | {c for u in dropped for c in children.get(u, [])})
        self.filtered = set()
        return with_extras, dict(self.partitions[partition_id]), steps

    def _merge_extras(self, partition_id: str) -> dict[str, list[str]]:
        """HORA: each probe group's outcome takes in its extra rollouts; the extras' trajectories
        carry the probe group's uid from now on. Returns probe uid -> its extra groups' uids."""
        children: dict[str, list[str]] = {}
        for child, parent in self.parent_of.items():
            extra = self.outcomes.pop(child, None)
            if extra is None or parent not in self.outcomes:
                continue
            children.setdefault(parent, []).append(child)
            probe = self.outcomes[parent]
            self.outcomes[parent] = GroupOutcome(probe.key, np.r_[probe.rewards, extra.rewards],
                                                 np.r_[probe.response_tokens, extra.response_tokens])
        parent_of_key = {k: self.parent_of[k.split("_")[0]] for k in self.partitions[partition_id]
                         if k.split("_")[0] in self.parent_of}
        if parent_of_key:  # one write for every extra trajectory
            tq.kv_batch_put(keys=list(parent_of_key), partition_id=partition_id,
                            fields=list_of_dict_to_tensordict([{"uid": p} for p in parent_of_key.values()]))
        return children
