"""The tiny Llama teacher the layer-cut tests cut students from (test_smollm2, test_heal): built from
config, no tokenizer, 6 layers by default."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig


def tiny_llama(layers: int = 6, seed: int = 0, initializer_range: float = 0.02):
    """``initializer_range`` above the default 0.02 gives layers that visibly change the residual
    stream (what Block Influence measures)."""
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()
