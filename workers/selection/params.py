"""Typed parameters of every built-in method, with one line of help each and the checks that
turn an impossible value into a message naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self


class SelectionConfigError(ValueError):
    """A selection config that cannot run; ``field`` names the offending setting.

    A composition check reports every problem at once: ``problems`` lists them all, the
    first being this error's own ``field`` and ``message``."""

    def __init__(self, field_name: str, message: str,
                 problems: Sequence[SelectionConfigError] | None = None) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.problems: list[SelectionConfigError] = list(problems) if problems else [self]


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class MethodParams:
    method: ClassVar[str] = ""

    def check(self) -> None:
        """Raise SelectionConfigError for a value no run can use."""

    def _require(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            raise SelectionConfigError(f"{self.method}.{name}", message)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Self:
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SelectionConfigError(
                f"{cls.method}.{unknown[0]}",
                f"unknown parameter; {cls.method} takes {', '.join(sorted(known)) or 'no parameters'}",
            )
        params = cls(**values)
        params.check()
        return params

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Name, default and help of every field: what a form or a CLI shows."""
        return [
            {"name": f.name, "default": f.default, "help": f.metadata.get("help", "")}
            for f in dataclasses.fields(cls)
        ]


@dataclass(frozen=True)
class GrpoParams(MethodParams):
    method: ClassVar[str] = "grpo"
    norm_by_std: bool = _help("divide by the group std (False: Dr. GRPO, mean-centred only)", True)
    eps: float = _help("added to the group std before dividing", 1e-6)

    def check(self) -> None:
        self._require(self.eps > 0, "eps", f"must be > 0, got {self.eps}")


@dataclass(frozen=True)
class DapoParams(MethodParams):
    method: ClassVar[str] = "dapo"
    gen_batch_factor: float = _help("prompts drawn per generation batch, as a multiple of B", 3.0)
    max_gen_batches: int = _help("generation batches per step before training on what was kept (0 = no limit)", 10)

    def check(self) -> None:
        self._require(self.gen_batch_factor >= 1, "gen_batch_factor", f"must be >= 1, got {self.gen_batch_factor}")
        self._require(self.max_gen_batches >= 0, "max_gen_batches", f"must be >= 0, got {self.max_gen_batches}")


@dataclass(frozen=True)
class GresoParams(MethodParams):
    method: ClassVar[str] = "greso"
    p_easy: float = _help("starting keep-probability base for prompts solved on every recent visit", 0.5)
    p_hard: float = _help("starting keep-probability base for prompts failed on every recent visit", 0.5)
    floor: float = _help("lowest keep probability, so no prompt is excluded for good", 0.01)
    target_easy: float = _help("share of all-correct groups the controller aims for", 0.25 / 3)
    target_hard: float = _help("share of all-wrong groups the controller aims for", 2 * 0.25 / 3)
    rollout_batch_factor: float = _help("largest rollout batch per round, as a multiple of B", 3.0)
    min_rollout_batch: int = _help("smallest rollout batch per refill round", 64)
    max_gen_batches: int = _help("rollout rounds per step before training on what was kept (0 = no limit)", 10)
    post_filter: str = _help("drop zero-variance groups after rollout: auto (on unless rlzvp), on, off", "auto")

    def check(self) -> None:
        for name in ("p_easy", "p_hard", "floor", "target_easy", "target_hard"):
            value = getattr(self, name)
            self._require(0 <= value <= 1, name, f"must lie in [0, 1], got {value}")
        self._require(self.rollout_batch_factor >= 1, "rollout_batch_factor", "must be >= 1")
        self._require(self.min_rollout_batch >= 1, "min_rollout_batch", "must be >= 1")
        self._require(self.max_gen_batches >= 0, "max_gen_batches", "must be >= 0")
        self._require(self.post_filter in ("auto", "on", "off"), "post_filter", "must be auto, on or off")


@dataclass(frozen=True)
class HiveParams(GresoParams):
    method: ClassVar[str] = "hive"
    lam: float = _help("stage-1 weight of the GRESO score against the entropy-history score (1.0 = GRESO)", 1.0)
    gate: str = _help("stage-2 gate: median (keep V >= median) or band (drop top k_off, keep next k_keep)", "median")
    k_off: float = _help("band gate: share of highest-entropy candidates dropped", 0.25)
    k_keep: float = _help("band gate: share of candidates kept after those", 0.5)
    pool_factor: float = _help("stage-1 survivors gathered before stage 2, as a multiple of the prompts needed", 1.5)

    def check(self) -> None:
        super().check()
        self._require(0 <= self.lam <= 1, "lam", f"must lie in [0, 1], got {self.lam}")
        self._require(self.gate in ("median", "band"), "gate", f"must be median or band, got {self.gate!r}")
        self._require(
            0 <= self.k_off < 1 and 0 < self.k_keep <= 1 and self.k_off + self.k_keep <= 1,
            "k_off",
            f"band needs 0 <= k_off < 1, 0 < k_keep <= 1, k_off + k_keep <= 1; got {self.k_off}, {self.k_keep}",
        )
        self._require(self.pool_factor >= 1, "pool_factor", f"must be >= 1, got {self.pool_factor}")


@dataclass(frozen=True)
class HoraParams(MethodParams):
    method: ClassVar[str] = "hora"
    n0: int = _help("probe rollouts per prompt before allocation (the rest of N x prompts is allocated)", 8)
    prior_alpha: float = _help("Beta prior alpha of the pass rate", 1.0)
    prior_beta: float = _help("Beta prior beta of the pass rate", 1.0)
    shards: int = _help("allocate within this many shards of the batch (1 = whole batch)", 1)

    def check(self) -> None:
        self._require(self.n0 >= 1, "n0", f"must be >= 1, got {self.n0}")
        self._require(self.prior_alpha > 0 and self.prior_beta > 0, "prior_alpha",
                      "the Beta prior needs alpha, beta > 0")
        self._require(self.shards >= 1, "shards", f"must be >= 1, got {self.shards}")


@dataclass(frozen=True)
class RlzvpParams(MethodParams):
    method: ClassVar[str] = "rlzvp"
    alpha: float = _help("advantage scale for zero-variance groups (paper best: 0.1)", 0.1)
    norm_by_std: bool = _help("GRPO part: divide by the group std", True)
    eps: float = _help("GRPO part: added to the group std", 1e-6)

    def check(self) -> None:
        self._require(self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        self._require(self.eps > 0, "eps", f"must be > 0, got {self.eps}")


@dataclass(frozen=True)
class LzeParams(MethodParams):
    method: ClassVar[str] = "lze"
    kappa: float = _help("share of the batch's groups that enter the update", 0.4)
    min_ratio: float = _help("lowest share of groups selected, whatever kappa", 0.3)
    momentum_weight: float = _help("weight a of the pass-rate momentum", 0.3)
    momentum: str = _help("abs: min(2|p - ema|, 1) (reference code); signed: p - ema (paper text)", "abs")
    d_init_min: float = _help("lowest difficulty anchor max(1 - p0, d_init_min)", 0.05)
    noise: float = _help("Gumbel noise scale, as a share of the live energy range", 0.05)
    backward: bool = _help("select the top-K groups for the update (backward selection)", True)
    warmup_epochs: int = _help("epochs that train every live group before backward selection starts (0: "
                               "select from the first step, as the reference run script does)", 0)
    prune: bool = _help("prune prompts all-correct for t_prune consecutive epochs, and replay some", False)
    t_prune: int = _help("consecutive all-correct epochs before a prompt is pruned", 2)
    replay_ratio: float = _help("share of the pruned pool replayed at each epoch start", 0.1)

    def check(self) -> None:
        self._require(0 < self.kappa <= 1, "kappa", f"must lie in (0, 1], got {self.kappa}")
        self._require(0 <= self.min_ratio <= 1, "min_ratio", f"must lie in [0, 1], got {self.min_ratio}")
        self._require(self.momentum in ("abs", "signed"), "momentum", f"must be abs or signed, got {self.momentum!r}")
        self._require(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")
        self._require(self.t_prune >= 1, "t_prune", f"must be >= 1, got {self.t_prune}")
        self._require(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        self._require(0 <= self.replay_ratio <= 1, "replay_ratio", "must lie in [0, 1]")
        self._require(self.backward or self.prune, "backward", "lze needs backward selection, pruning or both")
