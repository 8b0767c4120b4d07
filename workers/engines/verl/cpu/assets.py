"""The CPU mode's default model, built here: a tiny Llama and a character tokenizer.

Nothing is downloaded. The tokenizer is a WordLevel vocabulary over the printable
characters with a one-line chat template (the prompt's text, then a space for the answer);
the model is a Llama-architecture config (verl's agent loop falls back to its default token
builder for it; a Qwen2 config with this tokenizer is refused there) with random weights
from ``seed``. ``ensure_tiny_model`` writes both into one folder, atomically, once.
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPECIAL = {"<pad>": 0, "<s>": 1, "</s>": 2}
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %} {% endif %}")


@dataclass(frozen=True)
class TinyLlama:
    layers: int = 2
    hidden: int = 32
    heads: int = 4
    intermediate: int = 64
    max_positions: int = 256
    seed: int = 0


def char_tokenizer(folder: str | Path | None = None) -> Any:
    """A character-level Hugging Face tokenizer; saved to ``folder`` when given."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = dict(SPECIAL)
    for c in string.printable:
        vocab.setdefault(c, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = CHAT_TEMPLATE
    if folder is not None:
        tok.save_pretrained(folder)
        return PreTrainedTokenizerFast.from_pretrained(folder)
    return tok


def build_tiny_llama(folder: str | Path, spec: TinyLlama = TinyLlama()) -> Path:
    """Write the tokenizer and a randomly initialised tiny Llama (``save_pretrained``) to ``folder``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = char_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions, tie_word_embeddings=True,
        pad_token_id=SPECIAL["<pad>"], bos_token_id=SPECIAL["<s>"], eos_token_id=SPECIAL["</s>"],
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    GenerationConfig(eos_token_id=SPECIAL["</s>"], pad_token_id=SPECIAL["<pad>"],
                     bos_token_id=SPECIAL["<s>"]).save_pretrained(folder)
    return folder


def ensure_tiny_model(folder: str | Path, spec: TinyLlama = TinyLlama()) -> Path:
    """The tiny model at ``folder``, built there first if absent. Built in a sibling
    temporary folder and renamed, so a reader never sees half a checkpoint."""
    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build_tiny_llama(tmp, spec)
        try:
            os.rename(tmp, folder)
        except OSError:  # another launch built it first
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
