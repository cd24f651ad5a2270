"""The sliced model: a BERT encoder whose heads keep their original size.

transformers 5 derives the head size as hidden / heads, so a slice keeping k heads of 64 with
hidden 768 cannot be a `BertModel`. This file is the whole architecture, written out so every
shape is visible. Parameter names are the standard BERT ones, so a sliced state dict reads
like any other. The other families (`edgebert.layout.FAMILIES`) differ only in data: RoBERTa
and XLM-R in their positions (numbered from padding_idx + 1 over the non-pad tokens, as
transformers does, so left padding shifts nothing) and single token type; ELECTRA in its
embeddings (narrower, then projected to the hidden size); DistilBERT in its names and in
having no token types; their classification heads (dense -> tanh, or GELU for ELECTRA, ReLU
for DistilBERT, -> out_proj on token 0) are the pooler followed by the classifier, and are
stored that way.

Shapes: B batch, S sequence, D hidden, H kept heads, A head size, F kept FFN neurons.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from edgebert.layout import FAMILIES

MODEL_TYPE = "edgebert"
# The original DynaBERT code masks padding with (1 - mask) * -10000; finite, so fp16 stays safe.
MASK_VALUE = -10000.0
ACTIVATIONS = {
    "gelu": F.gelu,  # exact erf GELU, as BERT and DynaBERT use
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
# the pooler's (`edgebert.layout.Family.head_activation`)
HEAD_ACTIVATIONS = {"tanh": torch.tanh, "gelu": F.gelu, "relu": F.relu}


class EdgeBertConfig(PreTrainedConfig):
    """A BERT config whose head size is explicit instead of hidden / heads."""

    model_type = MODEL_TYPE

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    attention_head_size: int = 64
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    initializer_range: float = 0.02
    position_offset: int = 0  # 0 for BERT, padding_idx + 1 for RoBERTa
    add_pooling_layer: bool = True
    source_model_type: str = "bert"
    embedding_size: int | None = None  # ELECTRA's embeddings' width when it is not hidden_size

    @property
    def max_seq_len(self) -> int:
        """The longest input: RoBERTa's positions start after its pad id, BERT's at 0."""
        return self.max_position_embeddings - self.position_offset

    @property
    def embedding_width(self) -> int:
        return self.embedding_size or self.hidden_size


class EdgeBertEmbeddings(nn.Module):
    def __init__(self, config: EdgeBertConfig):
        super().__init__()
        width = config.embedding_width  # E
        # padding_idx only matters when training: as in BERT/RoBERTa, the padding rows get no gradient.
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        # RoBERTa (position_offset = pad + 1) numbers the non-pad tokens; BERT numbers every index from 0.
        self.position_pad = config.pad_token_id if config.position_offset else None
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width, self.position_pad)
        # none where the family has no token types (DistilBERT: type_vocab_size 0)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        if self.position_pad is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (S,)
        else:  # transformers' create_position_ids_from_input_ids: pad tokens get pad, the others pad + 1, pad + 2, ...
            real = input_ids.ne(self.position_pad).int()  # (B, S)
            positions = (torch.cumsum(real, dim=1).type_as(real) * real).long() + self.position_pad  # (B, S)
        x = self.word_embeddings(input_ids)  # (B, S, E)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(positions))


class EdgeBertSelfAttention(nn.Module):
    def __init__(self, config: EdgeBertConfig):
        super().__init__()
        self.num_heads, self.head_size = config.num_attention_heads, config.attention_head_size
        inner = self.num_heads * self.head_size  # H*A, smaller than D in a width-sliced model
        self.query = nn.Linear(config.hidden_size, inner)
        self.key = nn.Linear(config.hidden_size, inner)
        self.value = nn.Linear(config.hidden_size, inner)
        self.scale = self.head_size**-0.5

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        # Sizes from the mask every layer shares, not from x: an export then computes them once, not in every layer
        # (ONNX: 84 fewer shape nodes in a 12-layer graph, the (0.25, 1) int8 demo slice ~5 % faster at SST-2 lengths).
        batch, seq = additive_mask.shape[0], additive_mask.shape[-1]

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, S, H*A) -> (B, H, S, A)
            return t.view(batch, seq, self.num_heads, self.head_size).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale + additive_mask  # (B, H, S, S)
        context = torch.matmul(scores.softmax(dim=-1), v)  # (B, H, S, A)
        return context.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_size)


class EdgeBertDenseNorm(nn.Module):
    """Projection back to D, residual, LayerNorm: BERT's attention output and FFN output."""

    def __init__(self, in_features: int, config: EdgeBertConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class EdgeBertAttention(nn.Module):
    def __init__(self, config: EdgeBertConfig):
        super().__init__()
        self.self = EdgeBertSelfAttention(config)
        self.output = EdgeBertDenseNorm(config.num_attention_heads * config.attention_head_size, config)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, additive_mask), x)


class EdgeBertIntermediate(nn.Module):
    def __init__(self, config: EdgeBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)  # D -> F
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


class EdgeBertLayer(nn.Module):
    def __init__(self, config: EdgeBertConfig):
        super().__init__()
        self.attention = EdgeBertAttention(config)
        self.intermediate = EdgeBertIntermediate(config)
        self.output = EdgeBertDenseNorm(config.intermediate_size, config)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, additive_mask)
        return self.output(self.intermediate(x), x)


class EdgeBertEncoder(nn.Module):
    def __init__(self, config: EdgeBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(EdgeBertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


class EdgeBertPooler(nn.Module):
    def __init__(self, config: EdgeBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = HEAD_ACTIVATIONS[FAMILIES[config.source_model_type].head_activation]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden[:, 0]))  # (B, D) from the first token


class EdgeBertPreTrainedModel(PreTrainedModel):
    config_class = EdgeBertConfig
    config: EdgeBertConfig
    base_model_prefix = "bert"
    main_input_name = "input_ids"


class EdgeBertModel(EdgeBertPreTrainedModel):
    """The sliced encoder: `last_hidden_state` (B, S, D) and, with a pooler, `pooler_output` (B, D)."""

    def __init__(self, config: EdgeBertConfig, add_pooling_layer: bool | None = None):
        super().__init__(config)
        self.embeddings = EdgeBertEmbeddings(config)
        if config.embedding_width != config.hidden_size:  # ELECTRA's projection, E -> D (as ElectraModel: only then)
            self.embeddings_project = nn.Linear(config.embedding_width, config.hidden_size)
        self.encoder = EdgeBertEncoder(config)
        with_pooler = config.add_pooling_layer if add_pooling_layer is None else add_pooling_layer
        self.pooler = EdgeBertPooler(config) if with_pooler else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def project(self, embedded: torch.Tensor) -> torch.Tensor:
        """The embeddings (B, S, E) at the hidden size (B, S, D): ELECTRA's projection when E != D."""
        return self.embeddings_project(embedded) if hasattr(self, "embeddings_project") else embedded

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """The first layer's input (B, S, D)."""
        return self.project(self.embeddings(input_ids, token_type_ids))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        dtype = self.embeddings.word_embeddings.weight.dtype
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(dtype)) * MASK_VALUE  # (B, 1, 1, S)
        hidden = self.encoder(self.embed(input_ids, token_type_ids), additive_mask)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)


class EdgeBertForSequenceClassification(EdgeBertPreTrainedModel):
    """Pooler (dense + tanh, or GELU, on token 0) then a linear classifier, for every family alike."""

    def __init__(self, config: EdgeBertConfig):
        super().__init__(config)
        self.bert = EdgeBertModel(config, add_pooling_layer=True)
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
        pooled = self.bert(input_ids, attention_mask, token_type_ids).pooler_output
        logits = self.classifier(pooled)  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class ExportWrapper(nn.Module):
    """Plain tensors in, a tuple of the named outputs out: the form exporters trace (and the gate's reference).

    `sentence_embedding` is the mean of the real tokens' hidden states (sentence-transformers'
    mean pooling), so a runtime that takes one vector per text gets the model's sentence embedding.
    """

    def __init__(self, model: EdgeBertPreTrainedModel, output_names: list[str]):
        super().__init__()
        self.model, self.output_names = model, output_names
        self.eval()

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> tuple[torch.Tensor, ...]:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        named = {name: getattr(outputs, name) for name in self.output_names if name != "sentence_embedding"}
        if "sentence_embedding" in self.output_names:
            mask = attention_mask.unsqueeze(-1).to(outputs.last_hidden_state.dtype)  # (B, S, 1)
            total = (outputs.last_hidden_state * mask).sum(1)  # (B, D)
            named["sentence_embedding"] = total / mask.sum(1).clamp(min=1.0)
        return tuple(named[name] for name in self.output_names)


def register_with_transformers() -> None:
    """Let transformers' Auto classes load narrower slices (width < 1) without trust_remote_code."""
    AutoConfig.register(MODEL_TYPE, EdgeBertConfig, exist_ok=True)
    AutoModel.register(EdgeBertConfig, EdgeBertModel, exist_ok=True)
    AutoModelForSequenceClassification.register(EdgeBertConfig, EdgeBertForSequenceClassification, exist_ok=True)


register_with_transformers()
