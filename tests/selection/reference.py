"""Naive loop versions of the vectorised selection functions, written from docs/algorithms.md
independently of the library code, for the tests to compare against."""

from __future__ import annotations

import heapq
import math

import numpy as np


def grpo_loop(rewards, group_ids, norm_by_std=True, eps=1e-6):
    groups: dict = {}
    for r, g in zip(rewards, group_ids):
        groups.setdefault(g, []).append(float(r))
    stats = {}
    for g, values in groups.items():
        if len(values) == 1:
            stats[g] = (0.0, 1.0)
        else:
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            stats[g] = (mean, std)
    out = []
    for r, g in zip(rewards, group_ids):
        mean, std = stats[g]
        out.append((r - mean) / (std + eps) if norm_by_std else r - mean)
    return np.array(out)


def rlzvp_loop(rewards, group_ids, entropy, mask, alpha=0.1):
    adv = grpo_loop(rewards, group_ids)
    out = np.zeros(entropy.shape)
    members: dict = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    for g, rows in members.items():
        values = [rewards[i] for i in rows]
        zero_variance = len(rows) > 1 and max(values) == min(values)
        for i in rows:
            tokens = [t for t in range(entropy.shape[1]) if mask[i, t]]
            for t in tokens:
                if not zero_variance:
                    out[i, t] = adv[i]
                elif rewards[i] >= 0.5:
                    out[i, t] = alpha * entropy[i, t]
                else:
                    out[i, t] = -alpha * (max(entropy[i, k] for k in tokens) - entropy[i, t])
    return out


def beta_gain(a, b, m):
    """D(m) = U(m) - U(m-1) from log-Beta functions (independent of the recursion)."""
    def log_beta(x, y):
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)
    def utility(k):
        return 1.0 - math.exp(log_beta(a, b + k) - log_beta(a, b))
    return utility(m) - utility(m - 1)


def hit_utility_lgamma(a, b, m):
    return 1.0 - math.exp(math.lgamma(b + m) + math.lgamma(a + b) - math.lgamma(a + b + m) - math.lgamma(b))


def hora_heap(successes, n_pre, budget, prior=(1.0, 1.0)):
    """Greedy with a heap, one pop per extra rollout (the slow reference).

    Gains compare to a 40-bit mantissa, so mathematically equal gains that differ in
    their last bits tie and go to the lower prompt index (the library's tie rule).
    """
    def key(gain):
        mantissa, exponent = math.frexp(gain)
        return math.ldexp(round(mantissa * 2**40), exponent - 40)

    a = [prior[0] + s for s in successes]
    b = [prior[1] + n_pre - s for s in successes]
    gains = [a[i] / (a[i] + b[i]) for i in range(len(a))]
    m = [1] * len(a)
    heap = [(-key(gains[i]), i) for i in range(len(a))]
    heapq.heapify(heap)
    out = [0] * len(a)
    for _ in range(budget):
        _, i = heapq.heappop(heap)
        out[i] += 1
        gains[i] = gains[i] * ((b[i] + m[i] - 1) / (a[i] + b[i] + m[i]))
        m[i] += 1
        heapq.heappush(heap, (-key(gains[i]), i))
    return np.array(out)
