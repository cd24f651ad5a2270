"""An independent DynaBERT sub-network, for parity tests: the *full* transformers model, run the
way the official code evaluates a (width, depth), with heads and FFN neurons masked out and
layers skipped. It shares no code with edgebert; the rule is restated from the paper's code.
"""

from __future__ import annotations

import copy
import math

import torch
import transformers
import transformers.masking_utils

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
    if config.model_type == "modernbert":
        return masked_modernbert(model, width, depth)
    head_size = config.hidden_size // config.num_attention_heads
    heads, neurons, layers = official_rule(
        config.num_hidden_layers, config.num_attention_heads, ffn_size(config), width, depth
    )
    encoder = stack(model)
    encoder.layer = torch.nn.ModuleList(encoder.layer[i] for i in layers)

    def drop_heads(context):
        context = context.clone()
        context[..., heads * head_size :] = 0  # heads past k contribute nothing to the output dense
        return context

    def drop_neurons(module, args, output):
        output = output.clone()
        output[..., neurons:] = 0  # neurons past f contribute nothing to the FFN output
        return output

    for layer in encoder.layer:
        on_context(layer, drop_heads)
        activation(layer).register_forward_hook(drop_neurons)
    return model


def masked_modernbert(model: torch.nn.Module, width: float, depth: float) -> torch.nn.Module:
    """A stock ModernBERT (changed in place) whose forward is the (width, depth) sub-network: the dropped heads'
    and neurons' output columns (attn.Wo's, mlp.Wo's) zeroed, so they contribute nothing, and only the kept layers
    run; each transformers layer carries its own type (global or local attention, rotary base) from its index."""
    config = model.config
    head_size = config.hidden_size // config.num_attention_heads
    heads, neurons, layers = official_rule(
        config.num_hidden_layers, config.num_attention_heads, config.intermediate_size, width, depth
    )
    base = model.base_model
    with torch.no_grad():
        for index in layers:
            base.layers[index].attn.Wo.weight[:, heads * head_size :] = 0
            base.layers[index].mlp.Wo.weight[:, neurons:] = 0
    base.layers = torch.nn.ModuleList(base.layers[index] for index in layers)
    return model


def ffn_size(config) -> int:
    """FFN neurons per layer in a stock config (DistilBERT calls them hidden_dim)."""
    return config.hidden_dim if config.model_type == "distilbert" else config.intermediate_size


def stack(model: torch.nn.Module) -> torch.nn.Module:
    """The stock model's module holding its `layer` list (DistilBERT's is `transformer`)."""
    base = model.base_model
    return base.transformer if hasattr(base, "transformer") else base.encoder


def layer_list(model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """(module, attribute) of a stock model's list of layers: `stack`'s `layer`, or ModernBERT's own `layers`."""
    base = model.base_model
    return (base, "layers") if hasattr(base, "layers") else (stack(model), "layer")


def on_context(layer: torch.nn.Module, change) -> torch.utils.hooks.RemovableHandle:
    """Hook `change` onto a stock layer's attention context (B, S, heads x head size), before its output dense:
    BERT's self-attention returns it; DistilBERT's and ModernBERT's apply their output dense (`out_lin`, `attn.Wo`)
    themselves."""
    if hasattr(layer, "attn"):
        return layer.attn.Wo.register_forward_pre_hook(lambda module, args: (change(args[0]),))
    if hasattr(layer.attention, "out_lin"):
        return layer.attention.out_lin.register_forward_pre_hook(lambda module, args: (change(args[0]),))
    return layer.attention.self.register_forward_hook(lambda module, args, output: (change(output[0]), *output[1:]))


def on_ffn_input(layer: torch.nn.Module, change) -> torch.utils.hooks.RemovableHandle:
    """Hook `change` onto a stock layer's FFN input dense's output (B, S, F) (BERT's intermediate.dense,
    DistilBERT's ffn.lin1); ModernBERT's GeGLU Wi makes (B, S, 2F), inputs then gates: `change` applies to each."""
    if hasattr(layer, "mlp"):
        return layer.mlp.Wi.register_forward_hook(
            lambda module, args, out: torch.cat([change(half) for half in out.chunk(2, dim=-1)], dim=-1)
        )
    dense = layer.ffn.lin1 if hasattr(layer, "ffn") else layer.intermediate.dense
    return dense.register_forward_hook(lambda module, args, out: change(out))


def on_neurons(layer: torch.nn.Module, change) -> torch.utils.hooks.RemovableHandle:
    """Hook `change` onto a stock layer's FFN neurons (B, S, F) as its output dense reads them: after the
    activation (BERT's intermediate), or GeGLU's act(input) * gate (ModernBERT's mlp.Wo input)."""
    if hasattr(layer, "mlp"):
        return layer.mlp.Wo.register_forward_pre_hook(lambda module, args: (change(args[0]),))
    return activation(layer).register_forward_hook(lambda module, args, out: change(out))


def activation(layer: torch.nn.Module) -> torch.nn.Module:
    """The module whose output is a stock layer's FFN neurons after the activation (BERT's intermediate)."""
    return layer.ffn.activation if hasattr(layer, "ffn") else layer.intermediate


def masked_eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager attention with the masked keys' scores replaced rather than added to: the same outputs
    (a query that sees no key, padding in a local ModernBERT layer, attends uniformly to every key either way),
    but no gradient through a masked score, where eager's added dtype minimum absorbs the scores in the forward
    yet passes their gradients back. Registered as "masked_eager" (`transformers.AttentionInterface`)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        blocked = ~attention_mask if attention_mask.dtype == torch.bool else attention_mask < 0
        scores = scores.masked_fill(blocked, -10000.0)
    weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


transformers.AttentionInterface.register("masked_eager", masked_eager_attention)
transformers.AttentionMaskInterface.register("masked_eager", transformers.masking_utils.eager_mask)


class SharedSubnetworks:
    """Runs any (width, depth) sub-network of *one* transformers model in place, so every sub-network's
    gradients land in the same parameters (as DynaBERT training needs); records the hidden states
    (embedding output, then each kept layer's output) with forward hooks. No edgebert code involved."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.holder, self.attribute = layer_list(model)
        self.layers = list(getattr(self.holder, self.attribute))

    def __call__(self, inputs: dict, width: float, depth: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        config = self.model.config
        head_size = config.hidden_size // config.num_attention_heads
        heads, neurons, kept = official_rule(
            config.num_hidden_layers, config.num_attention_heads, ffn_size(config), width, depth
        )
        states: list[torch.Tensor] = []

        def drop_heads(context):
            context = context.clone()
            context[..., heads * head_size :] = 0
            return context

        def drop_neurons(output):
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
                on_context(layer, drop_heads),
                on_neurons(layer, drop_neurons),
                layer.register_forward_hook(record),
            ]
        setattr(self.holder, self.attribute, torch.nn.ModuleList(self.layers[i] for i in kept))
        try:
            logits = self.model(**inputs).logits
        finally:
            setattr(self.holder, self.attribute, torch.nn.ModuleList(self.layers))
            for handle in handles:
                handle.remove()
        return logits, states


def scaled_importance(model: torch.nn.Module, batches: list[tuple[dict, torch.Tensor]]):
    """Per-batch d loss / d scale for a scale on each head's context and on each FFN neuron's
    pre-activation (alpha; GeGLU: its input and its gate) and output (beta), by autograd on those scales: for a
    neuron, d/d alpha = sum(W1 * dW1) + b1 * db1 and d/d beta = sum(W2 * dW2). Returns lists per batch of
    (heads (L, H), alpha (L, F), beta (L, F))."""
    config = model.config
    layers, heads, ffn = config.num_hidden_layers, config.num_attention_heads, ffn_size(config)
    head_size = config.hidden_size // heads
    model.eval()
    results = []
    for inputs, targets in batches:
        m = torch.ones(layers, heads, requires_grad=True)
        alpha = torch.ones(layers, ffn, requires_grad=True)
        beta = torch.ones(layers, ffn, requires_grad=True)
        handles = []
        for i, layer in enumerate(getattr(*layer_list(model))):

            def scale_heads(context, i=i, m=m):
                shape = context.shape
                return (context.view(*shape[:-1], heads, head_size) * m[i][:, None]).view(shape)

            handles += [
                on_context(layer, scale_heads),
                on_ffn_input(layer, lambda out, i=i, alpha=alpha: out * alpha[i]),
                on_neurons(layer, lambda out, i=i, beta=beta: out * beta[i]),
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
