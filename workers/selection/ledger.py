"""The per-prompt ledger: everything the selectors remember about each prompt.

Keyed by a stable prompt key (never a per-step uuid). State lives column-wise in numpy
arrays indexed by a slot per prompt, so a million prompts cost tens of megabytes and a
step's update is a handful of vectorised operations. Small per-method state (GRESO's
controller, HIVE's running correlation, LZE's epoch) lives in ``method_state`` so that
one ``save``/``load`` checkpoints all of it, bit-exactly.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np


class Bucket:
    """Learning-edge buckets (ARCHITECTURE.md), as small ints in arrays and names outside."""

    UNSEEN, TOO_EASY, EDGE, TOO_HARD, PRUNED, STALE = range(6)
    NAMES = ("unseen", "too_easy", "edge", "too_hard", "pruned", "stale")


# column name -> (dtype, fill value for a new prompt)
COLUMNS: dict[str, tuple[type, Any]] = {
    "visits": (np.int32, 0),
    "last_step": (np.int64, -1),
    "p0": (np.float64, np.nan),  # first observed pass rate
    "ema": (np.float64, np.nan),  # LZE's EMA of the pass rate, starts at p0
    "last_pass_rate": (np.float64, np.nan),
    "trailing_easy": (np.int32, 0),  # consecutive all-correct visits up to the last one
    "trailing_hard": (np.int32, 0),  # consecutive all-wrong visits up to the last one
    "entropy_sum": (np.float64, 0.0),  # of per-visit mean response-token entropy
    "entropy_count": (np.int32, 0),
    "last_response_entropy": (np.float64, np.nan),
    "last_prompt_entropy": (np.float64, np.nan),  # HIVE stage 2's V(x)
    "epoch_streak": (np.int32, 0),  # LZE: consecutive epochs ending all-correct
    "last_epoch": (np.int32, -1),  # the epoch of the last visit
    "pruned": (np.bool_, False),
}


class PromptLedger:
    def __init__(self, capacity: int = 1024, history: int = 8) -> None:
        self.history = int(history)
        self._keys: list[str] = []
        self._slot: dict[str, int] = {}
        capacity = max(int(capacity), 1)
        self._columns: dict[str, np.ndarray] = {name: np.full(capacity, fill, dtype=dtype)
                                                for name, (dtype, fill) in COLUMNS.items()}
        # The visit trace: the last `history` pass rates per prompt, a ring by visit count.
        self._trace = np.full((capacity, self.history), np.nan, dtype=np.float32)
        self.method_state: dict[str, Any] = {}

    # -- keys and slots ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._slot

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def key_of(self, slot: int) -> str:
        return self._keys[slot]

    def slots(self, keys: list[str] | np.ndarray, create: bool = True) -> np.ndarray:
        """Slots for prompt keys; new keys get fresh slots (or -1 when ``create`` is False)."""
        out = np.empty(len(keys), dtype=np.int64)
        lookup = self._slot
        for i, key in enumerate(keys):
            slot = lookup.get(key)
            if slot is None:
                if not create:
                    out[i] = -1
                    continue
                if not isinstance(key, str) or not key:
                    raise ValueError(f"prompt keys must be non-empty strings, got {key!r}")
                slot = len(self._keys)
                self._keys.append(key)
                lookup[key] = slot
            out[i] = slot
        self._ensure_capacity(len(self._keys))
        return out

    def _ensure_capacity(self, needed: int) -> None:
        capacity = self._trace.shape[0]
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        for name, (dtype, fill) in COLUMNS.items():
            grown: np.ndarray = np.full(capacity, fill, dtype=dtype)
            old = self._columns[name]
            grown[: old.shape[0]] = old
            self._columns[name] = grown
        trace = np.full((capacity, self.history), np.nan, dtype=np.float32)
        trace[: self._trace.shape[0]] = self._trace
        self._trace = trace

    def column(self, name: str) -> np.ndarray:
        """A live view of one column over the known prompts (read it, do not write it)."""
        return self._columns[name][: len(self._keys)]

    def trace(self, slots: np.ndarray) -> np.ndarray:
        """Pass rates of the last visits per slot, oldest first, NaN where fewer visits."""
        visits = self._columns["visits"][slots]
        order = (visits[:, None] + np.arange(self.history)[None, :]) % self.history
        passes: np.ndarray = self._trace[slots[:, None], order]
        return passes

    def mean_response_entropy(self, slots: np.ndarray) -> np.ndarray:
        count = self._columns["entropy_count"][slots]
        total = self._columns["entropy_sum"][slots]
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    # -- updates ----------------------------------------------------------------------
    def observe(
        self,
        keys: list[str],
        successes: np.ndarray,
        sizes: np.ndarray,
        step: int,
        epoch: int = 0,
        response_entropy: np.ndarray | None = None,
    ) -> np.ndarray:
        """Record one visit per group: pass rate, streaks, trace, p0, EMA, entropy.

        The EMA is updated here (decay 0.9, docs/algorithms.md §6), after any scoring that
        needed the previous value. A key repeated in one call is applied in order.
        Returns the slots.
        """
        slots = self.slots(keys)
        s = np.asarray(successes, dtype=np.float64)
        g = np.asarray(sizes, dtype=np.float64)
        if s.shape != slots.shape or g.shape != slots.shape:
            raise ValueError("observe needs one success count and one group size per key")
        if g.size and (g.min() < 1 or s.min() < 0 or (s > g).any()):
            raise ValueError("each group needs size >= 1 and 0 <= successes <= size")
        entropy = (
            np.full(slots.shape, np.nan)
            if response_entropy is None
            else np.asarray(response_entropy, dtype=np.float64)
        )
        # Repeated keys: split into rounds so each round touches a slot at most once.
        order = np.argsort(slots, kind="stable")
        sorted_slots = slots[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_slots)) + 1] if slots.size else np.zeros(0, int)
        rank = np.empty(slots.shape, dtype=np.int64)
        rank[order] = np.arange(slots.size) - np.repeat(starts, np.diff(np.r_[starts, slots.size]))
        for round_ in range(int(rank.max(initial=-1)) + 1):
            pick = rank == round_
            self._observe_unique(slots[pick], s[pick] / g[pick], step, epoch, entropy[pick])
        return slots

    def _observe_unique(
        self, slots: np.ndarray, p: np.ndarray, step: int, epoch: int, entropy: np.ndarray
    ) -> None:
        c = self._columns
        visits = c["visits"][slots]
        self._trace[slots, visits % self.history] = p
        c["visits"][slots] = visits + 1
        c["last_step"][slots] = step
        c["last_epoch"][slots] = epoch
        c["last_pass_rate"][slots] = p
        first = np.isnan(c["p0"][slots])
        c["p0"][slots] = np.where(first, p, c["p0"][slots])
        ema_prev = np.where(first, p, c["ema"][slots])
        c["ema"][slots] = 0.9 * ema_prev + 0.1 * p
        easy = p >= 1.0
        hard = p <= 0.0
        c["trailing_easy"][slots] = np.where(easy, c["trailing_easy"][slots] + 1, 0)
        c["trailing_hard"][slots] = np.where(hard, c["trailing_hard"][slots] + 1, 0)
        seen = ~np.isnan(entropy)
        if seen.any():
            hit = slots[seen]
            c["entropy_sum"][hit] += entropy[seen]
            c["entropy_count"][hit] += 1
            c["last_response_entropy"][hit] = entropy[seen]

    def set_prompt_entropy(self, slots: np.ndarray, values: np.ndarray) -> None:
        self._columns["last_prompt_entropy"][slots] = values

    def set_pruned(self, slots: np.ndarray, pruned: bool) -> None:
        self._columns["pruned"][slots] = pruned
        if not pruned:
            self._columns["epoch_streak"][slots] = 0

    def close_epoch(self, epoch: int) -> np.ndarray:
        """Advance LZE's epoch streaks for prompts seen in ``epoch``; return their slots.

        A prompt whose last visit in the epoch was all-correct extends its streak; any
        other visit resets it. Prompts not visited in the epoch keep their streak.
        """
        seen = np.flatnonzero(self.column("last_epoch") == epoch)
        solved = self._columns["last_pass_rate"][seen] >= 1.0
        streak = self._columns["epoch_streak"]
        streak[seen] = np.where(solved, streak[seen] + 1, 0)
        return seen

    def buckets(self, slots: np.ndarray, step: int, stale_after: int = 50) -> np.ndarray:
        """Learning-edge bucket per slot (Bucket codes) as of ``step``."""
        c = self._columns
        out = np.full(slots.shape, Bucket.EDGE, dtype=np.int8)
        out[c["trailing_hard"][slots] > 0] = Bucket.TOO_HARD
        out[c["trailing_easy"][slots] > 0] = Bucket.TOO_EASY
        out[(c["visits"][slots] > 0) & (step - c["last_step"][slots] > stale_after)] = Bucket.STALE
        out[c["visits"][slots] == 0] = Bucket.UNSEEN
        out[c["pruned"][slots]] = Bucket.PRUNED
        return out

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        n = len(self._keys)
        state: dict[str, Any] = {name: self._columns[name][:n].copy() for name in COLUMNS}
        state["trace"] = self._trace[:n].copy()
        state["keys"] = list(self._keys)
        state["history"] = self.history
        state["method_state"] = json.loads(json.dumps(self.method_state))
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PromptLedger:
        keys = list(state["keys"])
        ledger = cls(capacity=max(len(keys), 1), history=int(state["history"]))
        ledger.slots(keys)
        n = len(keys)
        for name, (dtype, _) in COLUMNS.items():
            ledger._columns[name][:n] = np.asarray(state[name], dtype=dtype)
        ledger._trace[:n] = state["trace"]
        ledger.method_state = json.loads(json.dumps(state["method_state"]))
        return ledger

    def save(self, path: str | Path) -> None:
        """Write the ledger to ``path`` (npz; keys and method state as JSON), atomically."""
        state = self.state_dict()
        arrays = {name: state[name] for name in COLUMNS}
        arrays["trace"] = state["trace"]
        meta = json.dumps({"keys": state["keys"], "history": self.history, "method_state": state["method_state"]})
        arrays["meta"] = np.frombuffer(meta.encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(buffer.getvalue())
        partial.replace(target)

    @classmethod
    def load(cls, path: str | Path) -> PromptLedger:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
            state: dict[str, Any] = {name: data[name] for name in COLUMNS}
            state["trace"] = data["trace"]
        state.update(meta)
        return cls.from_state_dict(state)

