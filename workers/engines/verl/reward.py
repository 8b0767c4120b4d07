"""verl's custom reward function over our verifiers.

verl loads it from ``reward.custom_reward_function.{path,name}`` (``path`` may be
``pkg://workers.engines.verl.reward``, ``name`` = ``compute_score``) through
``verl.trainer.ppo.reward.get_custom_reward_fn``, which merges
``reward.custom_reward_function.reward_kwargs`` into every call; the V1 reward loop
(``verl/experimental/reward_loop/reward_manager/naive.py::NaiveRewardManager.run_single``)
calls it as ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)``.

The verifier is chosen, first match wins, from:
1. ``extra_info["verifier"]`` (and ``extra_info["verifier_options"]``): a per-prompt choice
   written into the parquet, for datasets that mix sources;
2. the ``verifier`` / ``verifier_options`` keyword arguments (``reward_kwargs`` in the
   config: the launcher writes the run's ``RunConfig.verifier`` there);
3. the environment: ``EDGEPLANE_VERIFIER`` and ``EDGEPLANE_VERIFIER_OPTIONS`` (JSON);
4. ``exact``.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

from workers.problems.verifiers import Verifier, get_verifier

ENV_VERIFIER = "EDGEPLANE_VERIFIER"
ENV_OPTIONS = "EDGEPLANE_VERIFIER_OPTIONS"
DEFAULT = "exact"


@lru_cache(maxsize=32)
def _verifier(name: str, options_json: str) -> Verifier:
    return get_verifier(name, **json.loads(options_json))


def choose_verifier(extra_info: dict[str, Any] | None = None, verifier: str | None = None,
                    verifier_options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The verifier's name and options for one response (see the module's docstring)."""
    info = extra_info if isinstance(extra_info, dict) else {}
    if info.get("verifier"):
        return str(info["verifier"]), dict(info.get("verifier_options") or {})
    if verifier:
        return verifier, dict(verifier_options or {})
    if os.environ.get(ENV_VERIFIER):
        return os.environ[ENV_VERIFIER], json.loads(os.environ.get(ENV_OPTIONS) or "{}")
    return DEFAULT, {}


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None,
                  verifier: str | None = None, verifier_options: dict[str, Any] | None = None,
                  **kwargs: Any) -> float:
    """1.0 when the response verifies against the ground truth, else 0.0.

    Extra keyword arguments verl may pass (``reward_router_address``, ...) are ignored.
    An unknown verifier name or option raises ValueError naming the valid ones: a
    misconfigured run must fail on its first reward, not train on zeros.
    """
    name, options = choose_verifier(extra_info, verifier, verifier_options)
    check = _verifier(name, json.dumps(options, sort_keys=True))
    return float(check(str(solution_str), str(ground_truth)))
