"""An independent DynaBERT sub-network, for parity tests: the *full* transformers model, run the
way the official code evaluates a (width, depth), with heads and FFN neurons masked out and
layers skipped. It shares no code with edgebert; the rule is restated from the paper's code.
"""

from __future__ import annotations

import copy
import math

import torch

from edgebert.subnet import Architecture

# BERT-base with a 2-label classifier, as in ../shared/dynabert.md's size table.
BERT_BASE = Architecture(
    num_layers=12,
    num_heads=12,
    hidden_size=768,
    head_size=64,
    intermediate_size=3072,
    vocab_size=30522,
    max_positions=512,
    type_vocab_size=2,
    has_pooler=True,
    num_labels=2,
)


def official_rule(num_layers: int, num_heads: int, ffn: int, width: float, depth: float):
    heads = round(num_heads * width)
    neurons = int(heads / num_heads * ffn)
    layers = [math.floor(i / depth) for i in range(round(num_layers * depth))]
    return heads, neurons, layers


def masked_subnetwork(full_model: torch.nn.Module, width: float, depth: float) -> torch.nn.Module:
    """A copy of a transformers BERT/RoBERTa whose forward is the (width, depth) sub-network."""
    model = copy.deepcopy(full_model).eval()
    config = model.config
    head_size = config.hidden_size // config.num_attention_heads
    heads, neurons, layers = official_rule(
        config.num_hidden_layers, config.num_attention_heads, config.intermediate_size, width, depth
    )
    encoder = model.base_model.encoder
    encoder.layer = torch.nn.ModuleList(encoder.layer[i] for i in layers)

    def drop_heads(module, args, output):
        context, weights = output
        context = context.clone()
        context[..., heads * head_size :] = 0  # heads past k contribute nothing to the output dense
        return context, weights

    def drop_neurons(module, args, output):
        output = output.clone()
        output[..., neurons:] = 0  # neurons past f contribute nothing to the FFN output
        return output

    for layer in encoder.layer:
        layer.attention.self.register_forward_hook(drop_heads)
        layer.intermediate.register_forward_hook(drop_neurons)
    return model
