"""The sliced ModernBERT: transformers' ModernBERT whose heads keep their original size, written out.

transformers 5 derives ModernBERT's head size as hidden / heads, and its attention output as hidden x
hidden, so a slice keeping k heads of 64 at hidden 768 cannot be a `ModernBertModel`. This is the
whole architecture (transformers' `modeling_modernbert`, eager attention), every shape visible, under
its parameter names, so a slice's weights read like any ModernBERT's. Per layer, as in the source:
pre-norm (layer 0 has none before its attention: `layer_sources` says which kept layer was layer 0),
fused QKV, rotary positions by layer type (global "full_attention" or local "sliding_attention",
each its own rotary base), a local layer attending only within +-local_attention/2 tokens, GeGLU FFN.
The classifier pools token 0 or the mean of the real tokens, then dense -> activation -> norm.

Masking replaces the scores of the keys a query may not see with -10000 (finite, so fp16 stays safe):
a query seeing no key at all (padding, in a local layer) then attends uniformly to every key, as
transformers' own (whose mask adds the dtype's minimum, absorbing the scores) does.

Shapes: B batch, S sequence, D hidden, H kept heads, A head size, F kept FFN neurons.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from edgebert.configs import EDGE_MODEL_TYPES
from edgebert.model import ACTIVATIONS, MASK_VALUE, EdgeBertConfig

MODEL_TYPE = EDGE_MODEL_TYPES["modernbert"]
GLOBAL, LOCAL = "full_attention", "sliding_attention"  # transformers' layer types


class EdgeModernBertConfig(EdgeBertConfig):
    """edgebert's config (explicit head size) with ModernBERT's defaults, and layers that each name their type and
    origin."""

    model_type = MODEL_TYPE

    vocab_size: int = 50368
    num_hidden_layers: int = 22
    intermediate_size: int = 1152
    max_position_embeddings: int = 8192
    type_vocab_size: int = 0  # none: the inputs are ids and mask only
    layer_norm_eps: float = 1e-5
    pad_token_id: int | None = 50283
    add_pooling_layer: bool = False  # the classifier's head (dense -> activation -> norm)
    source_model_type: str = "modernbert"
    layer_types: list[str] | None = None  # per kept layer: GLOBAL or LOCAL
    layer_sources: list[int] | None = None  # per kept layer: its index in the source (layer 0 has no attention norm)
    rotary_bases: dict[str, float] | None = None  # rotary theta by layer type
    local_attention: int = 128  # a local layer's window: +-local_attention // 2 tokens
    attention_bias: bool = False
    mlp_bias: bool = False
    norm_bias: bool = False
    classifier_bias: bool = False
    classifier_pooling: str = "cls"  # "cls" (token 0) or "mean" (of the real tokens)
    classifier_activation: str = "gelu"


def _norm(config: EdgeModernBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.norm_bias)


class EdgeModernBertEmbeddings(nn.Module):
    def __init__(self, config: EdgeModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = _norm(config)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.tok_embeddings(input_ids))  # (B, S, D)


def rotary_frequencies(base: float, head_size: int, device: torch.device) -> torch.Tensor:
    """(A/2,) inverse frequencies, as transformers' default rotary computes them. Computed in each forward, not kept
    in a buffer: `from_pretrained` builds the model on the meta device and leaves a non-persistent buffer unset."""
    return 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float, device=device) / head_size))


def rotary(positions: torch.Tensor, frequencies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin (S, A) of positions (S,), once per forward for every layer of a type: sin's first half is
    negated, so `rotate` needs no negation of its own (-a * b equals a * -b exactly)."""
    angles = positions[:, None].float() * frequencies  # (S, A/2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, half: int) -> torch.Tensor:
    """x (B, H, S, A) rotated by position (transformers' x * cos + rotate_half(x) * sin, with `rotary`'s signed sin),
    in fp32 (as transformers), back in x's dtype. `half` (A/2) is the config's, a constant in an export where x's
    traced shape would be shape arithmetic in every layer."""
    x32 = x.float()
    first, second = x32.split([half, half], dim=-1)
    return (x32 * cos + torch.cat((second, first), dim=-1) * sin).to(x.dtype)


def dropped(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Dropout at `rate` (training's; 0 in eval and in slices, which then run no dropout op)."""
    return F.dropout(x, rate) if rate else x


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    visible: torch.Tensor,
    scale: float,
    head_mask: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention of (B, H, S, A) heads over the keys `visible` (B, 1, S, S) lets each query see;
    `head_mask` (H,) scales each head's probabilities (rewiring's importance), after their dropout. Returns
    (B, H, S, A)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, H, S, S)
    probs = scores.masked_fill(~visible, MASK_VALUE).softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    probs = dropped(probs, dropout)
    if head_mask is not None:
        probs = probs * head_mask[None, :, None, None]
    return torch.matmul(probs, v)


def visibility(attention_mask: torch.Tensor, window: int | None) -> torch.Tensor:
    """(B, 1, S, S): the real keys, within +-window of the query for a local layer (window None: global)."""
    if window is None:
        return attention_mask.bool()[:, None, None, :].expand(-1, -1, attention_mask.shape[1], -1)
    # `near` depends on the length only, so a fixed-length export folds it into a constant: kept in the mask's
    # integer dtype, never boolean, as litert-torch 0.10's runtime folding writes a boolean constant without its data
    # (LiteRT then refuses the file: "Tensor N is invalidly specified in schema").
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    near = ((positions[:, None] - positions[None, :]).abs() <= window).to(attention_mask.dtype)  # (S, S)
    return (attention_mask[:, None, None, :] * near).bool()


class EdgeModernBertAttention(nn.Module):
    """The attention's weights (the layer's forward uses them): Wqkv makes Q, K and V heads; Wo projects back."""

    def __init__(self, config: EdgeModernBertConfig):
        super().__init__()
        self.num_heads, self.head_size = config.num_attention_heads, config.attention_head_size
        self.scale = self.head_size**-0.5  # a constant: the scores' scale, not computed from a traced shape
        inner = self.num_heads * self.head_size  # H*A, smaller than D in a width-sliced model
        self.Wqkv = nn.Linear(config.hidden_size, 3 * inner, bias=config.attention_bias)  # Q heads, K heads, V heads
        self.Wo = nn.Linear(inner, config.hidden_size, bias=config.attention_bias)


class EdgeModernBertMLP(nn.Module):
    """GeGLU's weights (the layer's forward uses them): Wi makes F inputs and F gates; act(input) * gate goes
    through Wo."""

    def __init__(self, config: EdgeModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)  # D -> 2F
        self.act = ACTIVATIONS[config.hidden_act]
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)


class EdgeModernBertLayer(nn.Module):
    """One pre-norm layer. Its forward reads the weights by name within the layer (`edgebert.layout`'s
    MODERNBERT_LAYER), its own by default: training runs a sub-network on views of them (`edgebert.dynabert`)."""

    def __init__(self, config: EdgeModernBertConfig, index: int):
        super().__init__()
        self.attention_type = config.layer_types[index]
        self.attn_norm = nn.Identity() if config.layer_sources[index] == 0 else _norm(config)
        self.attn = EdgeModernBertAttention(config)
        self.mlp_norm = _norm(config)
        self.mlp = EdgeModernBertMLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        visible: torch.Tensor,
        weights: dict[str, torch.Tensor] | None = None,
        head_mask: torch.Tensor | None = None,
        dropout: tuple[float, float] = (0.0, 0.0),
    ) -> torch.Tensor:
        """`weights`: the tensors to use (default: the layer's own); `head_mask` (H,) scales each head's attention
        probabilities; `dropout`: the (attention, FFN) rates, where transformers' ModernBERT drops out."""
        w = dict(self.named_parameters()) if weights is None else weights
        x = x + self._attention(self._norm(w, "attn_norm", x), w, cos, sin, visible, head_mask, dropout[0])
        return x + self._mlp(self._norm(w, "mlp_norm", x), w, dropout[1])

    def _norm(self, w: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm `name`; none (layer 0's attention norm) when the layer has no such weight."""
        if f"{name}.weight" not in w:
            return x
        weight = w[f"{name}.weight"]  # its length, not x.shape (a tensor in the ONNX trace with dynamic axes)
        return F.layer_norm(x, tuple(weight.shape), weight, w.get(f"{name}.bias"), self.mlp_norm.eps)

    def _attention(self, x, w, cos, sin, visible, head_mask, dropout: float) -> torch.Tensor:
        """Every size is a constant or `visible`'s (B and S, the same tensor for every layer of a type), so an ONNX
        export computes no shapes per layer; Q and K are rotated in one go."""
        batch, seq, size = visible.shape[0], visible.shape[-1], self.attn.head_size
        wqkv = w["attn.Wqkv.weight"]  # (3*H*A, D): H kept heads each of Q, K and V
        heads = wqkv.shape[0] // (3 * size)
        qkv = F.linear(x, wqkv, w.get("attn.Wqkv.bias")).view(batch, seq, 3 * heads, size).transpose(1, 2)
        qk, v = qkv.split([2 * heads, heads], dim=1)  # (B, 2H, S, A): Q heads then K heads; (B, H, S, A)
        q, k = rotate(qk, cos, sin, size // 2).split([heads, heads], dim=1)
        context = attention(q, k, v, visible, self.attn.scale, head_mask, dropout).transpose(1, 2)  # (B, S, H, A)
        context = context.reshape(batch, seq, heads * size)
        return dropped(F.linear(context, w["attn.Wo.weight"], w.get("attn.Wo.bias")), dropout)

    def _mlp(self, x: torch.Tensor, w: dict[str, torch.Tensor], dropout: float) -> torch.Tensor:
        neurons = w["mlp.Wo.weight"].shape[1]  # F: a constant split, where chunk(2) is shape arithmetic in an export
        inputs, gate = F.linear(x, w["mlp.Wi.weight"], w.get("mlp.Wi.bias")).split([neurons, neurons], dim=-1)
        return F.linear(dropped(self.mlp.act(inputs) * gate, dropout), w["mlp.Wo.weight"], w.get("mlp.Wo.bias"))


class EdgeModernBertPreTrainedModel(PreTrainedModel):
    config_class = EdgeModernBertConfig
    config: EdgeModernBertConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"


class EdgeModernBertModel(EdgeModernBertPreTrainedModel):
    """The sliced encoder: `last_hidden_state` (B, S, D), after the final norm."""

    def __init__(self, config: EdgeModernBertConfig):
        super().__init__(config)
        self.embeddings = EdgeModernBertEmbeddings(config)
        self.layers = nn.ModuleList(EdgeModernBertLayer(config, index) for index in range(config.num_hidden_layers))
        self.final_norm = _norm(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.tok_embeddings

    def layer_inputs(self, attention_mask: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
        """By layer type: (cos, sin, visible), what each layer takes besides the hidden states."""
        config, device = self.config, attention_mask.device
        positions = torch.arange(attention_mask.shape[1], device=device)
        window = {GLOBAL: None, LOCAL: config.local_attention // 2}
        return {
            kind: (
                *rotary(positions, rotary_frequencies(config.rotary_bases[kind], config.attention_head_size, device)),
                visibility(attention_mask, window[kind]),
            )
            for kind in set(config.layer_types)
        }

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # none: taken only for the shared export signature
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = self.layer_inputs(attention_mask)
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, *inputs[layer.attention_type])
        return BaseModelOutputWithPooling(last_hidden_state=self.final_norm(x))


def pooled(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, D): token 0 ("cls"), or the mean of the real tokens ("mean")."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, S, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1)


class EdgeModernBertHead(nn.Module):
    def __init__(self, config: EdgeModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = ACTIVATIONS[config.classifier_activation]
        self.norm = _norm(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))


class EdgeModernBertForSequenceClassification(EdgeModernBertPreTrainedModel):
    """Pooling, then dense -> activation -> norm, then a linear classifier."""

    def __init__(self, config: EdgeModernBertConfig):
        super().__init__(config)
        self.model = EdgeModernBertModel(config)
        self.head = EdgeModernBertHead(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.model(input_ids, attention_mask).last_hidden_state
        logits = self.classifier(self.head(pooled(hidden, attention_mask, self.config.classifier_pooling)))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def register_with_transformers() -> None:
    """Let transformers' Auto classes load narrower ModernBERT slices without trust_remote_code."""
    AutoConfig.register(MODEL_TYPE, EdgeModernBertConfig, exist_ok=True)
    AutoModel.register(EdgeModernBertConfig, EdgeModernBertModel, exist_ok=True)
    AutoModelForSequenceClassification.register(
        EdgeModernBertConfig, EdgeModernBertForSequenceClassification, exist_ok=True
    )


register_with_transformers()
