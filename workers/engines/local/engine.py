"""The embedded engine: real GRPO on a small causal LM, on CPU or one GPU.

One step, top to bottom: the selection pipeline asks for candidates, filters them
(GRESO / HIVE / LZE pruner), the policy samples groups (HORA: a probe, then the extras),
the verifier scores them, the post-filter and backward selection pick the groups that
train (DAPO / LZE), and the clipped-surrogate update runs with GRPO or RL-ZVP advantages.
The step's record goes to the telemetry sink, whose answer may cancel or stop the run
(workers/engines/lifecycle.py: the device-hour cap and how a run ends, shared with the verl engine).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.engines.config import RunConfig
from workers.engines.lifecycle import STATUS_OF_STOP, Ending, RunLifecycle
from workers.engines.local import warm_start
from workers.engines.local.evaluate import evaluate
from workers.engines.local.model import Policy, hf_policy, resolve_device, tiny_policy
from workers.engines.local.sampling import (
    NonFiniteLogits,
    Rollouts,
    concat,
    entropy_from_logits,
    left_pad,
    positions,
    sample,
    select_rows,
)
from workers.engines.local.update import TrainingDiverged, UpdateStats, grpo_update
from workers.engines.local.warmup import WarmupStopped, supervised_warmup
from workers.engines.telemetry import TelemetrySink
from workers.problems import arithmetic
from workers.problems.dataset import PromptRecord, read_dataset
from workers.problems.verifiers import get_verifier
from workers.record import Control, RunStatus, StepRecord
from workers.selection import hive
from workers.selection.groups import SUCCESS_THRESHOLD
from workers.selection.pipeline import (
    GroupOutcome,
    Pipeline,
    RolloutRound,
    StepSelection,
    TrainingBatch,
)

log = logging.getLogger(__name__)
KEEP_CHECKPOINTS = 3


@dataclass
class Loader:
    """Prompt keys in a fresh shuffled order each epoch, with a queue in front of it for
    prompts given back (deferred by a filter) or put first (LZE replays).

    Within one step a key is handed out at most once: a small dataset wrapping around
    mid-step must not put the same prompt in the batch twice. Keys met again are carried
    to the front of the queue for the next step.
    """

    keys: list[str]
    rng: np.random.Generator
    order: list[int] = field(default_factory=list)
    position: int = 0
    queue: deque[str] = field(default_factory=deque)
    wrapped: bool = False  # an epoch ended during the last step
    _taken: set[str] = field(default_factory=set)
    _carried: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.order:
            self.order = self.rng.permutation(len(self.keys)).tolist()

    def begin_step(self) -> None:
        self.queue.extendleft(reversed(self._carried))
        self._carried, self._taken = [], set()

    def take(self, n: int) -> list[str]:
        """Up to n keys not yet handed out this step (fewer once the dataset is used up)."""
        out: list[str] = []
        for _ in range(len(self.queue)):
            if len(out) == n:
                break
            key = self.queue.popleft()
            (self._carried if key in self._taken else out).append(key)
            self._taken.add(key)
        budget = len(self.keys)  # one pass: beyond it every key was met this step
        while len(out) < n and budget > 0:
            if self.position == len(self.order):
                self.order = self.rng.permutation(len(self.keys)).tolist()
                self.position = 0
                self.wrapped = True
            key = self.keys[self.order[self.position]]
            self.position += 1
            budget -= 1
            (self._carried if key in self._taken else out).append(key)
            self._taken.add(key)
        return out

    def put_back(self, keys: list[str]) -> None:
        """Keys drawn but not used this round: they may be drawn again in this step."""
        self._taken.difference_update(keys)
        self.queue.extendleft(reversed(keys))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "order": self.order, "position": self.position,
                "queue": [*self._carried, *self.queue], "wrapped": self.wrapped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order, self.position = list(state["order"]), int(state["position"])
        self.queue, self.wrapped = deque(state["queue"]), bool(state["wrapped"])
        self._carried, self._taken = [], set()


@dataclass
class StepRollouts:
    """Every rollout sampled in one step, which rows belong to which group, and every
    group's rewards in the order the groups were collected."""

    parts: list[Rollouts] = field(default_factory=list)
    rows: dict[int, np.ndarray] = field(default_factory=dict)  # id(GroupOutcome) -> rows
    rewards: list[np.ndarray] = field(default_factory=list)
    count: int = 0

    def add(self, rollouts: Rollouts) -> np.ndarray:
        self.parts.append(rollouts)
        rows = np.arange(self.count, self.count + len(rollouts))
        self.count += len(rollouts)
        return rows

    def merged(self, pad_id: int) -> Rollouts:
        """All of the step's rollouts as one batch (kept as the only part)."""
        if len(self.parts) > 1:
            self.parts = [concat(self.parts, pad_id)]
        return self.parts[0]


def split_rows(rows: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """Consecutive rows cut into groups of ``sizes``."""
    starts = np.r_[0, np.cumsum(sizes)]
    return [rows[starts[i]:starts[i + 1]] for i in range(len(sizes))]


PHASES = ("select", "generate", "reward", "update")


class StepTimer:
    """Wall seconds of one step in each phase; the bookkeeping between phases counts in none."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class LocalEngine:
    def __init__(self, config: RunConfig, out_dir: str | Path, sink: TelemetrySink, *,
                 var_dir: str | Path = "var") -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.sink = sink
        self.var_dir = Path(var_dir)
        self.train, self.test = self._load_records()
        self.by_key = {r.key: r for r in self.train}
        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        self.device = resolve_device(config.device)
        self.policy = self._build_policy()
        self.policy.model.to(self.device)
        self.policy.model.eval()
        self.verifier = get_verifier(config.verifier)
        self.pipeline = Pipeline(config.selector_params(), batch_size=config.batch_size,
                                 group_size=config.group_size, seed=config.seed, audit_share=config.audit_share)
        self.optimizer = torch.optim.AdamW(self.policy.model.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.loader = Loader([r.key for r in self.train], np.random.default_rng(config.seed))
        self.step = 0
        self.epoch = 0
        self.device_seconds = 0.0
        self.lifecycle = RunLifecycle(max_device_hours=config.max_device_hours)  # the cap; how the run ends
        self._encoded: dict[str, list[int]] = {}
        self.last_checkpoint: Path | None = None

    # -- setup ------------------------------------------------------------------------------
    def _load_records(self) -> tuple[list[PromptRecord], list[PromptRecord]]:
        c = self.config
        if c.dataset:
            train = read_dataset(c.dataset)
            test = read_dataset(c.eval_dataset) if c.eval_dataset else []
        else:
            splits = arithmetic.builtin_task(c.task, seed=c.seed, n_train=c.task_train_size, n_test=c.task_test_size,
                                             levels=c.task_levels)
            train, test = splits.train, splits.test
            if c.eval_dataset:
                test = read_dataset(c.eval_dataset)
        if c.eval_prompts:
            test = test[: c.eval_prompts]
        return train, test

    def _build_policy(self) -> Policy:
        c = self.config
        if c.model != "tiny":
            return hf_policy(c.model_dir())  # resolved under the models root, checked again
        charset = set(arithmetic.CHARSET)
        for record in self.train + self.test:
            texts = [record.prompt] if isinstance(record.prompt, str) else [m["content"] for m in record.prompt]
            for text in [*texts, record.ground_truth]:
                charset.update(text)
        longest = max(len(self._text(r)) + len(r.ground_truth) for r in self.train + self.test)
        positions = longest + c.max_new_tokens + 8
        if arithmetic.warmup_stream(self._task_family, c.warmup_seed) is not None:
            # A fixed 64 positions: the shape then does not depend on which prompts a split
            # holds, so the family's one cached warm-up fits every split of it.
            positions = max(positions, 64)
        return tiny_policy("".join(sorted(charset)), layers=c.model_layers, dim=c.model_dim, heads=c.model_heads,
                           max_positions=positions, seed=c.warmup_seed if self._warms_up else c.seed)

    @property
    def _warms_up(self) -> bool:
        c = self.config
        return c.model == "tiny" and c.warmup_steps + c.warmup_noise_steps > 0

    @property
    def _task_family(self) -> str:
        """The built-in family the prompts come from ('' for a user's own data)."""
        if not self.config.dataset:
            return self.config.task
        source = self.train[0].data_source if self.train else ""
        return source.removeprefix("edgeplane/") if source.startswith("edgeplane/") else ""

    @staticmethod
    def _text(record: PromptRecord) -> str:
        return record.prompt if isinstance(record.prompt, str) else "\n".join(m["content"] for m in record.prompt)

    # Where the built-in warm starts ship (warm_start.py); None: always train (the remake).
    shipped_warm_starts: Path | None = warm_start.SHIPPED

    def warmup_key(self) -> str | None:
        """The warm-up cache's key (None: this run does not warm up). It is keyed by what
        determines the model, never by a file path: the shape, the warm-up settings and seed,
        and what it trains on - a family's warm-up stream (the same for every split of the
        family), else the content of the prompts."""
        c = self.config
        if not self._warms_up:
            return None
        model = self.policy.model.config
        if arithmetic.warmup_stream(self._task_family, c.warmup_seed) is not None:
            source = f"stream:{self._task_family}"
        else:
            content = hashlib.sha256()
            for record in sorted(self.train, key=lambda r: r.key):
                content.update(f"{self._text(record)}\x1f{record.ground_truth}\x1e".encode())
            source = f"records:{content.hexdigest()}"
        return warm_start.warmup_key(
            source=source, layers=c.model_layers, dim=c.model_dim, heads=c.model_heads,
            n_positions=model.n_positions, activation=model.activation_function, charset=self.policy.tokenizer.charset,
            steps=c.warmup_steps, lr=c.warmup_lr, noise_steps=c.warmup_noise_steps, noise=c.warmup_noise,
            seed=c.warmup_seed)

    def _warm_up(self) -> dict[str, float]:
        c = self.config
        key = self.warmup_key()
        if key is None:
            return {}
        stream = arithmetic.warmup_stream(self._task_family, c.warmup_seed)
        cache = self.var_dir / "warmup" / f"{key}.pt"
        # The built-in warm start ships with the code (half precision): loaded unless var/
        # holds this warm-up already. Booked like a cached one: no warm-up device time.
        if not cache.is_file() and self.shipped_warm_starts is not None:
            shipped = warm_start.load(key, self.policy, self.shipped_warm_starts)
            if shipped is not None:
                log.info("warm-up: loaded the shipped warm start %s", key)
                return shipped
        # Each heartbeat carries the device-seconds spent since the last one (booked to the
        # run's warm-up usage) and the steps done of the total (the run page's warm-up bar), and
        # answers the control signal: a cancel or an exhausted budget stops the warm-up at its
        # next progress call.
        last = [time.perf_counter()]

        def heartbeat(detail: str, step: int, steps: int) -> None:
            now = time.perf_counter()
            spent, last[0] = now - last[0], now
            answer = self.sink.heartbeat(phase="warmup", detail=detail, device_seconds=spent,
                                         warmup_step=step, warmup_steps=steps)
            if answer != Control.CONTINUE:
                raise WarmupStopped(answer, step, steps)

        def progress(step: int, steps: int, loss: float) -> None:  # called once step (0-based) is done
            heartbeat(f"supervised warm-up step {step + 1}/{steps}, loss {loss:.3f}", step + 1, steps)

        figures = supervised_warmup(self.policy, self.train, steps=c.warmup_steps, lr=c.warmup_lr,
                                    seed=c.warmup_seed, cache_path=cache, progress=progress, stream=stream,
                                    noise_steps=c.warmup_noise_steps, noise=c.warmup_noise)
        if not figures.get("warmup_cached"):  # the time after the last progress call, booked too
            steps = int(figures["warmup_steps"])
            heartbeat(f"supervised warm-up done: {steps} steps, loss {figures['warmup_loss']:.3f}", steps, steps)
        return figures

    def encoded(self, key: str) -> list[int]:
        ids = self._encoded.get(key)
        if ids is None:
            ids = self._encoded[key] = self.policy.encode_prompt(self.by_key[key].prompt)
        return ids

    # -- the run ----------------------------------------------------------------------------
    def run(self, *, resume: bool = False) -> RunStatus:
        c = self.config
        resumed_from = self.load_latest() if resume else None
        try:
            warmup = {} if resumed_from is not None else self._warm_up()
        except WarmupStopped as stop:  # cancelled or out of budget before the first step
            control = Control(stop.control)
            why = "cancelled on request" if control == Control.CANCEL else "compute budget reached"
            return self._finish(Ending(STATUS_OF_STOP[control], f"{why} during the warm-up "
                                                                 f"(step {stop.step}/{stop.steps})"))
        if warmup:
            log.info("warm-up: %s", warmup)
        self.sink.run_started(config=c.to_dict(), model_parameters=self.policy.n_parameters,
                              dataset_size=len(self.train), resumed_from_step=resumed_from)
        try:
            if resumed_from is None and c.eval_every:
                self.sink.evaluation(self.evaluate())
            while self.step < c.steps:
                record = self.train_step(warmup=warmup if self.step == 0 else None)
                answer = self.sink.step(record)
                self._log_step(record)
                self.step += 1
                if (c.eval_every and self.step % c.eval_every == 0) or self.step == c.steps:
                    self.sink.evaluation(self.evaluate())
                control = self.lifecycle.after_step(answer, self.device_seconds)
                if control != Control.CONTINUE or self.step == c.steps or (
                        c.checkpoint_every and self.step % c.checkpoint_every == 0):
                    self.save_checkpoint()
                if control != Control.CONTINUE:
                    break
        except (TrainingDiverged, NonFiniteLogits) as exc:
            kept = self.last_checkpoint.name if self.last_checkpoint else None
            return self._finish(self.lifecycle.diverged(self.step, exc, kept))
        except Exception as exc:
            self._finish(self.lifecycle.crashed(self.step, exc))
            raise
        return self._finish(self.lifecycle.ending(self.step, self.device_seconds))

    @staticmethod
    def _log_step(record: StepRecord) -> None:
        s = record.summary
        mixed = s.groups_generated - s.groups_all_correct - s.groups_all_wrong
        vs_ds = s.rollout_savings_vs_dynamic_sampling
        def shown(value: float | None, form: str) -> str:
            return "not measured" if value is None else format(value, form)

        log.info("step %d: %d mixed / %d all-correct / %d all-wrong of %d groups, %d groups trained, "
                 "reward %s, rollout savings %.1f%% vs uniform GRPO, %s vs dynamic sampling, loss %s",
                 record.step, mixed, s.groups_all_correct, s.groups_all_wrong, s.groups_generated,
                 s.groups_trained, shown(s.train.reward_mean, ".3f"), 100 * s.rollout_savings,
                 "no estimate yet" if vs_ds is None else f"{100 * vs_ds:.1f}%", shown(s.train.loss, ".4f"))

    def _finish(self, end: Ending) -> RunStatus:
        self.sink.run_finished(status=end.status, reason=end.reason)
        return end.status

    # -- one step -----------------------------------------------------------------------------
    def train_step(self, warmup: Mapping[str, float] | None = None) -> StepRecord:
        """One optimizer step; its record (``warmup``: the warm-up's figures, on the first step).

        Rounds of rollouts are collected until the selection has its batch (a filter may ask
        for more), then the update runs on the groups it chose. Every second is the select,
        generate, reward or update phase's, as the record reports them."""
        timer = StepTimer()
        with timer.phase("select"):
            sel = self._open_step()
        collected = StepRollouts()
        self._forward_tokens = 0
        while True:
            with timer.phase("select"):
                round_ = self._draw_round(sel)
            if round_ is None:
                break
            if round_.keys:
                self._collect_round(sel, round_, collected, timer)
        with timer.phase("select"):
            batch = sel.finish()
        with timer.phase("update"):
            stats = self._update(sel, batch, collected)
        return self._close_step(sel, stats, collected, timer, warmup)

    def _open_step(self) -> StepSelection:
        """The step's selection; first a new epoch when the loader wrapped during the last
        step (LZE prunes at the end of an epoch and gives its replays back at the start)."""
        if self.loader.wrapped:
            self.loader.wrapped = False
            self.pipeline.end_epoch(self.epoch)
            self.epoch += 1
            self.loader.put_back(self.pipeline.start_epoch(self.epoch))
        sel = self.pipeline.begin_step(self.step, self.epoch)
        self.loader.begin_step()
        return sel

    def _draw_round(self, sel: StepSelection) -> RolloutRound | None:
        """The next round's prompts, screened by the pre-rollout filters (those deferred go
        back to the loader); None once the selection needs no more prompts this step."""
        if not sel.needs_prompts():
            return None
        candidates = self.loader.take(sel.request_size())
        if not candidates:  # every prompt of the dataset was drawn this step
            sel.loader_exhausted()
        round_ = sel.pre_rollout(candidates, prompt_entropy=self.prompt_entropy)
        self.loader.put_back(round_.deferred)
        return round_

    def _collect_round(self, sel: StepSelection, round_: RolloutRound, collected: StepRollouts,
                       timer: StepTimer) -> None:
        """Roll out and score one round: the probe (each whole group when HORA is off), the
        extra rollouts HORA allocates from the probe's successes, then the round's groups go
        to the selection."""
        with timer.phase("generate"):
            probe = self.generate(round_.keys, round_.probe_sizes)
        with timer.phase("reward"):
            probe_rewards = self.score(round_.keys, round_.probe_sizes, probe)
        with timer.phase("select"):
            extra = sel.allocate(round_, [int((r >= SUCCESS_THRESHOLD).sum()) for r in probe_rewards])
        group_rows = split_rows(collected.add(probe), round_.probe_sizes)
        group_rewards = list(probe_rewards)
        if extra.sum():
            more_keys = [k for k, m in zip(round_.keys, extra) if m]
            more_sizes = extra[extra > 0]
            with timer.phase("generate"):
                more = self.generate(more_keys, more_sizes)
            with timer.phase("reward"):
                more_rewards = self.score(more_keys, more_sizes, more)
            more_rows = split_rows(collected.add(more), more_sizes)
            for j, i in enumerate(np.flatnonzero(extra)):
                group_rows[i] = np.r_[group_rows[i], more_rows[j]]
                group_rewards[i] = np.r_[group_rewards[i], more_rewards[j]]
        outcomes = self._group_outcomes(round_.keys, group_rows, group_rewards, collected)
        with timer.phase("select"):
            sel.add_groups(outcomes)

    def _group_outcomes(self, keys: list[str], group_rows: list[np.ndarray], group_rewards: list[np.ndarray],
                        collected: StepRollouts) -> list[GroupOutcome]:
        """Each group's rewards, response lengths and mean response entropy, as selection sees it."""
        rollouts = collected.merged(self.policy.pad_id)
        outcomes = []
        for key, rows, rewards in zip(keys, group_rows, group_rewards):
            mask = rollouts.response_mask[rows]
            lengths = mask.sum(dim=1).cpu().numpy()
            entropy = float((rollouts.entropy[rows] * mask).sum() / mask.sum().clamp(min=1))
            outcome = GroupOutcome(key, rewards, lengths, mean_entropy=entropy, prompt_tokens=len(self.encoded(key)))
            collected.rows[id(outcome)] = rows
            collected.rewards.append(rewards)
            outcomes.append(outcome)
        return outcomes

    def _update(self, sel: StepSelection, batch: TrainingBatch, collected: StepRollouts) -> UpdateStats:
        """The step's learning rate, then the clipped-surrogate update on the groups selected."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        return self.update(sel, batch, collected)

    def _close_step(self, sel: StepSelection, stats: UpdateStats, collected: StepRollouts, timer: StepTimer,
                    warmup: Mapping[str, float] | None) -> StepRecord:
        """Close the step's selection (ledger, accounting) and make its record."""
        self.device_seconds += timer.total
        result = sel.close(seconds=timer.seconds, parameters=self.policy.n_parameters,
                           forward_tokens_extra=self._forward_tokens)
        generated = np.concatenate(collected.rewards) if collected.rewards else np.zeros(0)
        train = {
            "reward_mean": float(generated.mean()) if generated.size else 0.0,
            "response_length_mean": result.accounting.tokens_generated / max(result.accounting.rollouts_generated, 1),
            "loss": stats.loss,
            "grad_norm": stats.grad_norm,
            "clip_fraction": stats.clip_fraction,
            "entropy_mean": stats.entropy_mean,
            "approx_kl": stats.approx_kl,
            "device_seconds_total": self.device_seconds,
        }
        return StepRecord.from_result(result, train=train, warmup=warmup)

    def learning_rate(self, step: int) -> float:
        """Linear warm-up over the first lr_warmup_steps RL steps, then constant (verl's
        constant schedule with warm-up, except that ours starts at lr / W, not at 0).
        A function of the step alone, so a resumed run continues the same schedule."""
        c = self.config
        return c.lr * min(1.0, (step + 1) / c.lr_warmup_steps) if c.lr_warmup_steps else c.lr

    def generate(self, keys: list[str], sizes: np.ndarray) -> Rollouts:
        prompts = [self.encoded(k) for k, n in zip(keys, sizes) for _ in range(int(n))]
        return sample(self.policy, prompts, max_new_tokens=self.config.max_new_tokens,
                      temperature=self.config.temperature, top_p=self.config.top_p, generator=self.generator)

    def score(self, keys: list[str], sizes: np.ndarray, rollouts: Rollouts) -> list[np.ndarray]:
        ids = rollouts.response_ids.cpu()
        mask = rollouts.response_mask.cpu()
        out, row = [], 0
        for key, n in zip(keys, sizes):
            truth = self.by_key[key].ground_truth
            rewards = np.empty(int(n))
            for j in range(int(n)):
                text = self.policy.decode_response(ids[row][mask[row]].tolist())
                rewards[j] = self.verifier(text, truth)
                row += 1
            out.append(rewards)
        return out

    @torch.no_grad()
    def prompt_entropy(self, keys: list[str]) -> np.ndarray:
        """HIVE stage 2: mean next-token entropy over prompt positions 2..L, current policy."""
        ids, mask = left_pad([self.encoded(k) for k in keys], self.policy.pad_id, self.device)
        logits = self.policy.model(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask)).logits
        predicted = mask[:, 1:] & mask[:, :-1]  # a real position predicting a real next token
        entropy = entropy_from_logits(logits[:, :-1])
        self._forward_tokens += int(mask.sum())
        return hive.prompt_entropy(entropy.cpu().numpy(), predicted.cpu().numpy())

    def update(self, sel: StepSelection, batch: TrainingBatch, step_rollouts: StepRollouts) -> UpdateStats:
        if not batch.groups:
            return UpdateStats(0.0, 0.0, 0.0, 0.0, 0.0, 0)
        c = self.config
        all_rollouts = step_rollouts.parts[0]
        rows = torch.as_tensor(np.concatenate([step_rollouts.rows[id(g)] for g in batch.groups]), device=self.device)
        train = select_rows(all_rollouts, rows)
        group_rows = batch.group_rows()
        chunks = list(np.array_split(np.arange(len(batch.groups)), min(c.minibatches, len(batch.groups))))
        minibatch_rows = [torch.as_tensor(np.concatenate([group_rows[i] for i in chunk]), device=self.device)
                          for chunk in chunks]
        mask = train.response_mask.cpu().numpy()

        def advantages(number: int, entropy: torch.Tensor) -> torch.Tensor:
            chunk, chunk_rows = chunks[number], minibatch_rows[number].cpu().numpy()
            values = sel.advantages(batch.subset(chunk), entropy.cpu().numpy(), mask[chunk_rows])
            return torch.as_tensor(values, dtype=torch.float32, device=self.device)

        return grpo_update(
            self.policy, self.optimizer, train, minibatch_rows, advantages,
            torch.as_tensor(batch.rollout_weights, dtype=torch.float32, device=self.device),
            clip_low=c.clip_low, clip_high=c.clip_high, temperature=c.temperature, grad_clip=c.grad_clip,
            dr_grpo=c.dr_grpo, max_new_tokens=c.max_new_tokens,
        )

    def evaluate(self) -> dict[str, Any]:
        # Its own generator, seeded by the step: evaluating never shifts training's randomness.
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed * 1_000_003 + self.step)
        result = evaluate(self.policy, self.test, self.verifier, k=self.config.eval_k,
                          max_new_tokens=self.config.max_new_tokens, temperature=self.config.temperature,
                          top_p=self.config.top_p, generator=generator)
        return {"step": self.step, **result}

    # -- checkpoints ------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @torch.no_grad()
    def _check_health(self) -> None:
        """Refuse to checkpoint a policy whose outputs are no longer finite numbers: the
        last good checkpoint must stay the latest one."""
        keys = [r.key for r in self.train[:8]]
        ids, mask = left_pad([self.encoded(k) for k in keys], self.policy.pad_id, self.device)
        logits = self.policy.model(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask)).logits
        if not bool(torch.isfinite(logits).all()):
            raise TrainingDiverged("the policy's outputs are no longer finite numbers")

    def save_checkpoint(self) -> Path:
        self._check_health()
        target = self.checkpoint_dir / f"step_{self.step:06d}"
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        torch.save({
            "model": self.policy.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "loader": self.loader.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "device_seconds": self.device_seconds,
            "config": self.config.to_dict(),
        }, partial / "state.pt")
        self.pipeline.save(partial / "selection.npz")
        shutil.rmtree(target, ignore_errors=True)
        partial.replace(target)
        latest = self.checkpoint_dir / "latest.partial"
        latest.write_text(json.dumps({"step": self.step, "path": target.name}))
        latest.replace(self.checkpoint_dir / "latest")
        for old in sorted(self.checkpoint_dir.glob("step_??????"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        self.last_checkpoint = target
        self.sink.checkpoint_saved(step=self.step, path=str(target))
        return target

    def saved_step(self) -> int:
        """Step of the latest checkpoint (the step it resumes at)."""
        return int(json.loads((self.checkpoint_dir / "latest").read_text())["step"])

    def load_latest(self) -> int | None:
        pointer = self.checkpoint_dir / "latest"
        if not pointer.is_file():
            return None
        target = self.checkpoint_dir / json.loads(pointer.read_text())["path"]
        state = torch.load(target / "state.pt", map_location=self.device, weights_only=False)
        self.policy.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the resumed config's settings win
            group["lr"], group["weight_decay"] = self.config.lr, self.config.weight_decay
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.loader.load_state_dict(state["loader"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.device_seconds = float(state["device_seconds"])
        c = self.config
        self.pipeline = Pipeline.load(target / "selection.npz", c.selector_params(), batch_size=c.batch_size,
                                      group_size=c.group_size, audit_share=c.audit_share)
        self.last_checkpoint = target
        return self.step
