"""Reward functions for the end-to-end verl runs, loaded by verl's reward loop through
``reward.custom_reward_function.{path,name}`` (the same hook a user's reward uses).

- ``by_response``: 1 when the response's first character has an even code point. A random
  policy then gets mixed groups, so GRPO's advantages and gradients are not zero.
- ``by_prompt``: 1 for every response to a prompt whose key ends in an even number, else 0:
  groups are all-correct or all-wrong by prompt (LZE's pruner has solved prompts to prune).
- ``stalling``: ``by_response`` until ``EDGEPLANE_TEST_STALL_AFTER`` calls in this process,
  then it never returns: a stuck rollout.
"""

from __future__ import annotations

import os
import time

_calls = 0


def by_response(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    text = str(solution_str)
    return float(bool(text) and ord(text[0]) % 2 == 0)


def by_prompt(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    key = str((extra_info or {}).get("key", ""))
    return float(key.rsplit(":", 1)[-1].isdigit() and int(key.rsplit(":", 1)[-1]) % 2 == 0)


def stalling(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    global _calls
    _calls += 1
    if _calls > int(os.environ.get("EDGEPLANE_TEST_STALL_AFTER", "1000000")):
        time.sleep(3600)
    return by_response(data_source, solution_str, ground_truth, extra_info)
