"""A local Hugging Face checkpoint directory (model + tokenizer + chat template) trains
through the same engine, loaded from disk with nothing downloaded."""

import json

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from tests.engines.local.conftest import TINY
from workers.engines.config import RunConfig
from workers.engines.local.engine import LocalEngine
from workers.engines.telemetry import JsonlSink, read_events
from workers.record import RunStatus

CHARS = "0123456789+=<>|useratn \n"


def make_checkpoint(path):
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<a>"
    tokenizer.save_pretrained(path)
    config = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)


def test_a_local_checkpoint_with_a_chat_template_trains(tmp_path, var_dir, monkeypatch):
    monkeypatch.setenv("EDGEPLANE_MODELS_ROOT", str(tmp_path))  # models load from the models root only
    checkpoint = tmp_path / "model"
    make_checkpoint(checkpoint)
    data = tmp_path / "train.jsonl"
    rows = [{"prompt": [{"role": "user", "content": f"{a}+{b}="}], "reward_model": {"ground_truth": str(a + b)},
             "data_source": "toy", "extra_info": {"index": i}}
            for i, (a, b) in enumerate((x, y) for x in range(4) for y in range(4))]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = RunConfig.from_mapping({**TINY, "model": "model", "dataset": str(data),
                                     "eval_dataset": str(data), "steps": 2,
                                     # an untrained model fails every group: RL-ZVP still gives a gradient
                                     "selectors": {"rlzvp": {}}})
    sink = JsonlSink(tmp_path / "out")
    engine = LocalEngine(config, tmp_path / "out", sink, var_dir=var_dir)
    assert engine.policy.kind == "hf"
    encoded = engine.policy.encode_prompt(rows[0]["prompt"])
    assert engine.policy.tokenizer.decode(encoded) == "<user>0+0=<a>"  # the chat template was applied
    before = {k: v.clone() for k, v in engine.policy.model.state_dict().items()}
    assert engine.run() == RunStatus.SUCCEEDED
    after = engine.policy.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    steps = [e for e in read_events(sink.path) if e["event"] == "step"]
    assert [e["step"] for e in steps] == [0, 1]
    assert all(o["prompt_key"].startswith("toy:") for o in steps[0]["observations"])
