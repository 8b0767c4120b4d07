"""A verl trainer on CPU for the contract tests: everything real but the GPU worker groups.

``make_trainer`` builds ``EdgeplaneTrainer`` through its own ``__init__`` (verl's
``PPOTrainer.__init__``: checkpoint callback, replay buffer) from the launcher's composed
config, then runs verl's ``_init_dataloader`` over the launcher's exported parquet with a
local character tokenizer. What ``init()`` would add needs GPUs (actor/rollout worker
groups, vLLM replicas, the agent-loop manager); the tests stand in for two of them:

- ``ScriptedRollout`` is the agent-loop manager's ``generate_sequences`` for a scripted
  policy: for each prompt it writes ``n`` trajectories (``__rollout_n__`` when the prompt
  has it, as ``AgentLoopWorkerTQ._run_prompt`` does) into TransferQueue with the keys,
  fields and tags ``_agent_loop_postprocess`` writes (the prompt's own fields included),
  with rewards from a per-prompt success rate, then marks the prompt finished. The
  ``entropy`` field is the one ``_compute_old_log_prob`` adds later.
- ``EntropyActor`` is the actor worker group's ``compute_log_prob`` for HIVE's probe: a
  tiny GPT-2 reads ``input_ids`` from TransferQueue and writes the per-position ``entropy``
  of the whole sequence back, as verl's engine does (the trainer takes the response part).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

B, N = 4, 4  # prompts per step and rollouts per prompt of the contract tests
SMALL = {"engine": "verl", "task": "add", "task_train_size": 24, "task_test_size": 6, "batch_size": B, "group_size": N,
         "minibatches": 2, "steps": 5, "checkpoint_every": 2, "eval_every": 0, "verifier": "numeric"}


def char_tokenizer(folder: Path):
    """The CPU mode's character tokenizer (workers/engines/verl/cpu/assets.py), saved locally."""
    from workers.engines.verl.cpu.assets import char_tokenizer as build

    return build(folder)


def make_trainer(tmp_path: Path, selectors: dict, tokenizer, **run: object):
    from workers.engines.config import RunConfig
    from workers.engines.verl.launch import VerlOptions, compose_overrides, plan
    from workers.engines.verl.trainer import EdgeplaneTrainer

    config = RunConfig.from_mapping({**SMALL, **run, "selectors": selectors})
    # No dataloader worker processes: two cores, and the test draws a few prompts at a time.
    options = VerlOptions(run_dir=str(tmp_path), model_path=str(tmp_path / "model"),
                          extra_overrides=("data.dataloader_num_workers=0",))
    launch = plan(config, options)
    trainer = EdgeplaneTrainer(compose_overrides(launch.overrides))
    trainer.tokenizer, trainer.processor = tokenizer, None
    trainer._init_dataloader()
    trainer.global_steps = 0
    return trainer


def verl_prompt_fields(batch, i: int) -> dict:
    """Row ``i`` of a submitted batch as verl 0.9.1's agent loop reads it
    (``AgentLoopWorkerTQ.generate_sequences``, v1/agent_loop_tq.py), line for line: a tensor
    field is indexed, a ``NonTensorStack`` gives its row's ``.data``, and a ``NonTensorData``
    gives its one value to every row (so a per-row field stored as one value reaches each row whole)."""
    import torch
    from tensordict import NonTensorData, NonTensorStack

    prompt = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            prompt[k] = v[i]
        elif isinstance(v, NonTensorStack):
            prompt[k] = v[i].data
        elif isinstance(v, NonTensorData):
            prompt[k] = v.data
        else:
            raise TypeError(f"verl logs 'Unsupported type {type(v)} for key {k}' and drops the field")
    return prompt


class ScriptedRollout:
    """``generate_sequences`` of a policy whose successes per prompt are scripted."""

    def __init__(self, group_size: int, successes: Callable[[str], int], response_len: int = 3) -> None:
        self.n, self.successes, self.response_len = group_size, successes, response_len
        self.submitted: list[list[str]] = []  # stable keys per call
        self.sizes: list[list[int]] = []  # rollouts per prompt per call

    def wins(self, key: str, n: int) -> int:
        """Successes among ``n`` rollouts: the scripted success rate, at any group size."""
        return round(self.successes(key) * n / self.n)

    def generate_sequences(self, batch) -> None:
        import transfer_queue as tq
        from verl.utils.tensordict_utils import list_of_dict_to_tensordict

        keys_this_call, sizes = [], []
        for i in range(len(batch)):
            prompt = verl_prompt_fields(batch, i)
            uid = prompt["uid"]
            info = prompt["extra_info"]
            key = str(info["key"])
            keys_this_call.append(key)
            # verl: n = prompt.pop("__rollout_n__", config.n)
            n = int(prompt.pop("__rollout_n__", self.n))
            sizes.append(n)
            step = int(prompt.get("global_steps", 0))
            own_fields = {f: prompt[f] for f in ("edgeplane_group",) if f in prompt}
            wins = self.wins(key, n)
            keys, fields, tags = [], [], []
            for s in range(n):
                scores = torch.zeros(self.response_len)
                scores[-1] = float(s < wins)
                mask = torch.ones(self.response_len, dtype=torch.int64)
                prompts = torch.tensor([5, 6], dtype=torch.int64)
                responses = torch.tensor([7] * self.response_len, dtype=torch.int64)
                keys.append(f"{uid}_{s}_0")
                fields.append({"uid": uid, "rm_scores": scores, "response_mask": mask, "loss_mask": mask,
                               "prompts": prompts, "responses": responses,
                               "input_ids": torch.cat([prompts, responses]), "extra_info": info,
                               "entropy": torch.full((self.response_len,), 0.5 + 0.1 * s),
                               **own_fields})
                tags.append({"status": "success", "prompt_len": 2, "response_len": self.response_len,
                             "seq_len": 2 + self.response_len, "global_steps": step,
                             "min_global_steps": step, "max_global_steps": step})
            # verl's agent loop puts str keys; a uid that is not one fails here, as there
            tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(fields), tags=tags)
            tq.kv_put(key=uid, partition_id="train", tag={"status": "finished"})
        self.submitted.append(keys_this_call)
        self.sizes.append(sizes)


class EntropyActor:
    """``compute_log_prob`` with ``calculate_entropy``: per-position entropy of a tiny GPT-2,
    behind the checks of verl's path: the dispatch splits the batch into one chunk per
    data-parallel rank (``_dispatch_info``), and each rank's engine cuts its chunk into
    micro-batches of ``micro_batch`` rows, asserting divisibility (``prepare_micro_batches``,
    workers/engine/utils.py). The real actor runs in test_e2e_cpu.py."""

    def __init__(self, vocab_size: int, seed: int = 0, *, dp: int = 1, micro_batch: int = 1) -> None:
        self._dispatch_info = {"actor": list(range(dp))}
        self.micro_batch = micro_batch
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(seed)
        self.model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=1024, n_embd=32, n_layer=1,
                                                n_head=2)).eval()
        self.calls = 0
        self.batches: list[tuple[int, int]] = []  # (rows, padding rows) per call

    def entropy_of(self, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model(input_ids=input_ids[None]).logits[0]
        logp = torch.log_softmax(logits.double(), dim=-1)
        return -(logp.exp() * logp).sum(-1).float()

    def compute_log_prob(self, batch) -> None:
        import transfer_queue as tq
        from tensordict import TensorDict

        assert batch.extra_info.get("calculate_entropy") is True
        self.calls += 1
        self.batches.append((len(batch.keys), sum(k.startswith("pad") for k in batch.keys)))
        dp = max(self._dispatch_info["actor"]) + 1
        for rank in range(dp):
            chunk = len(batch.keys[rank::dp])
            assert len(batch.keys) % dp == 0 and chunk % self.micro_batch == 0, (
                "data size must be divisible by force_group_size * micro_batch_size_per_gpu")
        data = tq.kv_batch_get(keys=list(batch.keys), partition_id=batch.partition_id, select_fields=["input_ids"])
        rows = [self.entropy_of(ids) for ids in data["input_ids"].unbind()]
        nested = torch.nested.as_nested_tensor(rows, layout=torch.jagged)
        tq.kv_batch_put(keys=list(batch.keys), partition_id=batch.partition_id,
                        fields=TensorDict({"entropy": nested, "log_probs": nested.clone()}, batch_size=len(rows)))


def successes(key: str) -> int:
    """Scripted policy: every third prompt always solved, every fifth never, the rest mixed."""
    i = int(key.rsplit(":", 1)[1])
    return N if i % 3 == 0 else 0 if i % 5 == 0 else 1 + i % (N - 1)


def trainer_for(tmp_path: Path, tokenizer, selectors: dict, rollout: ScriptedRollout | None = None, **run: object):
    """``make_trainer`` with the scripted rollout and a short replay-buffer poll."""
    trainer = make_trainer(tmp_path, selectors, tokenizer, **run)
    trainer.replay_buffer.poll_interval = 0.01
    trainer.agent_loop_manager = rollout or ScriptedRollout(N, successes)
    return trainer


def run_step(trainer, tq):
    """One step in verl's order, the worker-group phases left out; returns the step's result,
    the stable keys trained, and verl's metrics."""
    trainer.global_steps += 1
    trainer.prepare_step()
    batch, metrics = trainer.replay_buffer.sample(global_steps=trainer.global_steps, partition_id="train",
                                                  batch_size=B)
    trained_uids = {k.split("_")[0] for k in batch.keys}
    trained_keys = {o.key for u, o in trainer.replay_buffer.outcomes.items() if u in trained_uids}
    trainer.close_step(metrics, {})
    tq.kv_clear(keys=list(batch.keys), partition_id="train")
    return trainer.last_result, trained_keys, metrics
