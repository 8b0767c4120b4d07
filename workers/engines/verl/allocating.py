"""Rollout submission and HORA's two-phase allocation.

``TwoPhaseRollout`` is a mixin of ``trainer.EdgeplaneTrainer``. Every batch of prompts goes out
through its ``_submit_batch_to_rollout``, which stamps the step it is rolled out in, tells the
replay buffer each group's stable key and counts the step's prompts. With an allocator in the
pipeline (HORA), the trainer's ``prepare_step`` calls ``_rollout_in_two_phases``: the selected
prompts go out with ``__rollout_n__ = n0``, the pipeline's ``probe_size`` (verl's agent loop
honours that per-prompt field), it waits for them (``_wait_until_finished``, at most
``edgeplane.rollout_timeout_s``), reads each probe's successes from TransferQueue and
allocates; the extra rollouts go out as new prompt groups (fresh uids: verl's session ids
restart at 0) that name their probe group in ``edgeplane_group`` (``PARENT_FIELD``). The
replay buffer merges each group with its extras (``sampler.py``); ``shaping.py`` weights them.

verl hooks it overrides (verl's base class calls them by name):

- ``_submit_batch_to_rollout``: verl's, with the bookkeeping above.

Its state: ``rollout_timeout_s`` (the replay buffer waits as long, ``trainer.py``). It reads the
trainer's ``pipeline``, the step's ``work`` (``selecting.py``) and verl's ``replay_buffer`` and
``global_steps``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import transfer_queue as tq
import verl.utils.tensordict_utils as tu
from tensordict import TensorDict

from workers.engines.verl.edgeplane_config import edgeplane_section
from workers.engines.verl.prompts import row_keys
from workers.engines.verl.sampler import RolloutTimeout, read_outcomes
from workers.engines.verl.selecting import StepWork
from workers.selection.groups import SUCCESS_THRESHOLD
from workers.selection.pipeline import RolloutRound

PARENT_FIELD = "edgeplane_group"  # HORA's extra rollouts: the uid of the probe group they extend
DEFAULT_ROLLOUT_TIMEOUT_S = 3600.0  # edgeplane.rollout_timeout_s: longest wait for one step's rollouts


class TwoPhaseRollout:
    """What goes out to rollout, HORA's two phases (see the module docstring); a mixin of ``EdgeplaneTrainer``."""

    rollout_timeout_s: float  # the longest wait for one step's rollouts

    def _setup_rollout(self, config: Any) -> None:
        section = edgeplane_section(config)
        self.rollout_timeout_s = float((section.get("rollout_timeout_s", 0) if section is not None else 0)
                                       or DEFAULT_ROLLOUT_TIMEOUT_S)

    def _rollout_in_two_phases(self, work: StepWork, batch: TensorDict) -> None:
        """Probe with n0 rollouts per prompt, wait, allocate the rest of B x N, submit the extras."""
        step = work.selection
        n0 = self.pipeline.probe_size
        uids = [str(u) for u in batch["uid"]]
        keys = [str(k) for k in row_keys(batch)]
        tu.assign_non_tensor_stack(batch, "__rollout_n__", [n0] * len(uids))
        self._submit_batch_to_rollout(batch)
        self._wait_until_finished(uids)
        start = time.perf_counter()
        entries = tq.kv_list(partition_id="train").get("train", {})
        trajectories = {k: tag for k, tag in entries.items() if not tag.get("is_prompt", False)}
        probe = read_outcomes(trajectories, "train", uids, dict(zip(uids, keys)))
        successes = [int((probe[u].rewards >= SUCCESS_THRESHOLD).sum()) if u in probe else 0 for u in uids]
        extra = step.allocate(RolloutRound(keys, np.full(len(keys), n0, dtype=np.int64), []), successes)
        work.select_seconds += time.perf_counter() - start
        rows = [i for i, m in enumerate(extra) if m > 0]
        if not rows:
            return
        extras = tu.index_select_tensor_dict(batch, rows)
        extra_uids = [str(uuid.uuid4()) for _ in rows]
        # One uid per row. A numpy array assigned as a field is stored by tensordict as ONE
        # value, and verl's agent loop (agent_loop_tq.py) then hands every row the whole array
        # as its uid: the TransferQueue write fails and the prompts stay pending for ever.
        tu.assign_non_tensor_stack(extras, "uid", extra_uids)
        tu.assign_non_tensor_stack(extras, "__rollout_n__", [int(extra[i]) for i in rows])
        tu.assign_non_tensor_stack(extras, PARENT_FIELD, [uids[i] for i in rows])
        self.replay_buffer.expect_extras({u: uids[i] for u, i in zip(extra_uids, rows)})  # type: ignore[attr-defined]
        self._submit_batch_to_rollout(extras)

    def _wait_until_finished(self, uids: list[str]) -> None:
        """Poll TransferQueue until every prompt group is finished (or failed), as verl's
        replay buffer does, for at most ``edgeplane.rollout_timeout_s``."""
        waiting = set(uids)
        poll = float(getattr(self.replay_buffer, "poll_interval", 2.0))
        deadline = time.monotonic() + self.rollout_timeout_s
        while True:
            tags = tq.kv_list(partition_id="train").get("train", {})
            waiting = {u for u in waiting if tags.get(u, {}).get("status") not in ("finished", "failure")}
            if not waiting:
                return
            if time.monotonic() > deadline:
                states: dict[str, int] = {}
                for u in waiting:
                    state = str(tags.get(u, {}).get("status", "missing"))
                    states[state] = states.get(state, 0) + 1
                raise RolloutTimeout(
                    f"HORA's probe rollouts did not finish within {self.rollout_timeout_s:.0f} s "
                    f"(edgeplane.rollout_timeout_s): {len(waiting)} of {len(uids)} prompt groups still "
                    f"{', '.join(f'{n} {s}' for s, n in sorted(states.items()))}; check the rollout workers' logs")
            time.sleep(poll)

    def _submit_batch_to_rollout(self, batch: TensorDict) -> int:
        # The step it is rolled out in (a batch selected ahead was drawn during the step before).
        tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)
        if self.work is not None:  # the buffer then knows each group's key without reading it back
            self.replay_buffer.note_submitted([str(u) for u in batch["uid"]], row_keys(batch))  # type: ignore[attr-defined]
        submitted = super()._submit_batch_to_rollout(batch)
        if self.work is not None:
            self.work.prompts_submitted += submitted
        return submitted
