"""A Bernoulli stand-in for an engine, for testing the pipeline's mechanics only.

Each prompt has a fixed true pass rate; a rollout is correct with that probability and
its "response" has a random length and entropies. It drives a step exactly as the
pipeline's docstring says an engine must; no model is trained here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from workers.selection.pipeline import GroupOutcome, Pipeline, StepResult


@dataclass
class Loader:
    keys: list[str]
    rng: np.random.Generator
    epoch: int = 0
    queue: deque[str] = field(default_factory=deque)
    _order: deque[str] = field(default_factory=deque)
    wrapped: bool = False

    def __post_init__(self) -> None:
        self._refill()

    def _refill(self) -> None:
        self._order = deque(self.rng.permutation(self.keys).tolist())

    def take(self, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n and self.queue:
            out.append(self.queue.popleft())
        while len(out) < n:
            if not self._order:
                self._refill()
                self.wrapped = True
            out.append(self._order.popleft())
        return out

    def put_back(self, keys: list[str]) -> None:
        self.queue.extendleft(reversed(keys))

    def put_first(self, keys: list[str]) -> None:
        self.put_back(keys)


class BernoulliEngine:
    def __init__(self, pass_rates: dict[str, float], seed: int = 0, max_tokens: int = 12) -> None:
        self.pass_rates = pass_rates
        self.rng = np.random.default_rng(seed)
        self.max_tokens = max_tokens
        self.forward_tokens = 0

    def generate(self, key: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        rewards = (self.rng.random(n) < self.pass_rates[key]).astype(np.float64)
        lengths = self.rng.integers(1, self.max_tokens + 1, size=n)
        return rewards, lengths

    def prompt_entropy(self, keys: list[str]) -> np.ndarray:
        self.forward_tokens += 5 * len(keys)
        p = np.array([self.pass_rates[k] for k in keys])
        return 4 * p * (1 - p) + 0.05 * self.rng.random(len(keys))

    def run_step(self, pipeline: Pipeline, loader: Loader, step: int, epoch: int) -> tuple[StepResult, np.ndarray]:
        sel = pipeline.begin_step(step, epoch)
        self.log = {"drawn": [], "rolled": [], "deferred": []}
        while sel.needs_prompts():
            keys = loader.take(sel.request_size())
            self.log["drawn"].extend(keys)
            round_ = sel.pre_rollout(keys, prompt_entropy=self.prompt_entropy)
            loader.put_back(round_.deferred)
            self.log["rolled"].extend(round_.keys)
            self.log["deferred"].extend(round_.deferred)
            if not round_.keys:
                continue
            probes = [self.generate(k, int(n)) for k, n in zip(round_.keys, round_.probe_sizes)]
            successes = [int(r.sum()) for r, _ in probes]
            extra = sel.allocate(round_, successes)
            outcomes = []
            for key, (r, lengths), m in zip(round_.keys, probes, extra):
                if m:
                    r2, l2 = self.generate(key, int(m))
                    r, lengths = np.concatenate([r, r2]), np.concatenate([lengths, l2])
                outcomes.append(GroupOutcome(key, r, lengths, mean_entropy=float(self.rng.random())))
            sel.add_groups(outcomes)
        batch = sel.finish()
        width = self.max_tokens
        lengths = batch.response_tokens
        mask = np.arange(width)[None, :] < lengths[:, None]
        entropy = self.rng.random((len(lengths), width)) * mask
        advantages = sel.advantages(batch, entropy, mask)
        result = sel.close(seconds={"generate": 0.01}, parameters=1000, forward_tokens_extra=self.forward_tokens)
        self.forward_tokens = 0
        return result, advantages


class Simulation:
    """A pipeline, a loader and a Bernoulli engine over prompts of mixed difficulty."""

    def __init__(self, methods, n_prompts: int = 64, batch_size: int = 8, group_size: int = 8, seed: int = 0,
                 pipeline: Pipeline | None = None) -> None:
        rng = np.random.default_rng(seed)
        keys = [f"p{i:04d}" for i in range(n_prompts)]
        self.rates = dict(zip(keys, rng.choice([0.0, 0.05, 0.3, 0.6, 0.95, 1.0], size=n_prompts).tolist()))
        self.pipeline = pipeline or Pipeline(methods, batch_size=batch_size, group_size=group_size, seed=seed)
        self.loader = Loader(keys, np.random.default_rng(seed + 1))
        self.engine = BernoulliEngine(self.rates, seed=seed + 2)
        self.epoch = 0
        self.step = 0
        self.logs: list[dict[str, list[str]]] = []

    def run(self, steps: int) -> list[tuple[StepResult, np.ndarray]]:
        results = []
        for _ in range(steps):
            if self.loader.wrapped:
                self.loader.wrapped = False
                self.pipeline.end_epoch(self.epoch)
                self.epoch += 1
                self.loader.put_first(self.pipeline.start_epoch(self.epoch))
            results.append(self.engine.run_step(self.pipeline, self.loader, self.step, self.epoch))
            self.logs.append(self.engine.log)
            self.step += 1
        return results


def simulate(methods, steps: int, **kwargs):
    sim = Simulation(methods, **kwargs)
    results = sim.run(steps)
    return sim.pipeline, results, sim.rates
