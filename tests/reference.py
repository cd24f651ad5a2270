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

# ../shared/dynabert.md, "Sizes (BERT-base, 2 labels)": parameters in millions, {depth: {width: M}}
DYNABERT_SIZES = {
    1.0: {1.0: 109.5, 0.75: 88.2, 0.5: 67.0, 0.25: 45.7},
    0.75: {1.0: 88.2, 0.75: 72.3, 0.5: 56.3, 0.25: 40.4},
    0.5: {1.0: 67.0, 0.75: 56.3, 0.5: 45.7, 0.25: 35.1},
}


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


class SharedSubnetworks:
    """Runs any (width, depth) sub-network of *one* transformers model in place, so every sub-network's
    gradients land in the same parameters (as DynaBERT training needs); records the hidden states
    (embedding output, then each kept layer's output) with forward hooks. No edgebert code involved."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.encoder = model.base_model.encoder
        self.layers = list(self.encoder.layer)

    def __call__(self, inputs: dict, width: float, depth: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        config = self.model.config
        head_size = config.hidden_size // config.num_attention_heads
        heads, neurons, kept = official_rule(
            config.num_hidden_layers, config.num_attention_heads, config.intermediate_size, width, depth
        )
        states: list[torch.Tensor] = []

        def drop_heads(module, args, output):
            context = output[0].clone()
            context[..., heads * head_size :] = 0
            return (context, *output[1:])

        def drop_neurons(module, args, output):
            output = output.clone()
            output[..., neurons:] = 0
            return output

        def record(module, args, output):
            states.append(output[0] if isinstance(output, tuple) else output)

        base = self.model.base_model
        first_input = getattr(base, "embeddings_project", base.embeddings)  # ELECTRA's projection feeds layer 0
        handles = [first_input.register_forward_hook(record)]
        for index in kept:
            layer = self.layers[index]
            handles += [
                layer.attention.self.register_forward_hook(drop_heads),
                layer.intermediate.register_forward_hook(drop_neurons),
                layer.register_forward_hook(record),
            ]
        self.encoder.layer = torch.nn.ModuleList(self.layers[i] for i in kept)
        try:
            logits = self.model(**inputs).logits
        finally:
            self.encoder.layer = torch.nn.ModuleList(self.layers)
            for handle in handles:
                handle.remove()
        return logits, states


def scaled_importance(model: torch.nn.Module, batches: list[tuple[dict, torch.Tensor]]):
    """Per-batch d loss / d scale for a scale on each head's context and on each FFN neuron's
    pre-activation (alpha) and output (beta), by autograd on those scales: for a neuron,
    d/d alpha = sum(W1 * dW1) + b1 * db1 and d/d beta = sum(W2 * dW2). Returns lists per batch of
    (heads (L, H), alpha (L, F), beta (L, F))."""
    config = model.config
    layers, heads, ffn = config.num_hidden_layers, config.num_attention_heads, config.intermediate_size
    head_size = config.hidden_size // heads
    model.eval()
    results = []
    for inputs, targets in batches:
        m = torch.ones(layers, heads, requires_grad=True)
        alpha = torch.ones(layers, ffn, requires_grad=True)
        beta = torch.ones(layers, ffn, requires_grad=True)
        handles = []
        for i, layer in enumerate(model.base_model.encoder.layer):

            def scale_heads(module, args, output, i=i, m=m):
                context = output[0]
                shape = context.shape
                scaled = (context.view(*shape[:-1], heads, head_size) * m[i][:, None]).view(shape)
                return (scaled, *output[1:])

            handles += [
                layer.attention.self.register_forward_hook(scale_heads),
                layer.intermediate.dense.register_forward_hook(lambda mod, a, out, i=i, alpha=alpha: out * alpha[i]),
                layer.intermediate.register_forward_hook(lambda mod, a, out, i=i, beta=beta: out * beta[i]),
            ]
        try:
            logits = model(**inputs).logits
            loss = torch.nn.functional.cross_entropy(logits, targets)
            g_m, g_alpha, g_beta = torch.autograd.grad(loss, [m, alpha, beta])
        finally:
            for handle in handles:
                handle.remove()
        results.append((g_m, g_alpha, g_beta))
    return results
