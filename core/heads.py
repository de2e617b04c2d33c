"""A classification head that pools the way the encoder was trained.

transformers' BertForSequenceClassification reads the [CLS] token through a pooler that
sentence-transformers models such as all-MiniLM-L6-v2 never trained: their sentence vector is the
mean of the token vectors. Pooling that way is worth ~20 accuracy points on IMDb for a frozen
MiniLM, so encoders get this head; causal LMs keep transformers' own last-token head.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)


def make_head(hidden_size: int, num_labels: int, head_hidden: int = 0, dropout: float = 0.1) -> nn.Module:
    if head_hidden:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, head_hidden), nn.ReLU(),
                             nn.Dropout(dropout), nn.Linear(head_hidden, num_labels))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_labels))


def drop_unused_pooler(encoder: nn.Module) -> None:
    """BERT-likes carry a [CLS] pooler (dense + tanh) that our pooling never reads. Left in, full
    fine-tuning counts and optimises it although it gets no gradient, all-linear LoRA puts adapters
    on it that never train, and full runs save it. Models built with add_pooling_layer=False have
    pooler=None, which their forward handles; only such models lose it here."""
    import inspect
    if getattr(encoder, "pooler", None) is None:
        return
    if "add_pooling_layer" in inspect.signature(type(encoder).__init__).parameters:
        encoder.pooler = None


class PooledClassifier(PreTrainedModel):
    """Encoder + mean/CLS pooling + a (possibly hidden-layer) linear head named `classifier`.

    It is a PreTrainedModel over the encoder's own config so that peft's prompt-learning methods
    (which read config.num_hidden_layers etc. and pass inputs_embeds) work on it unchanged.
    """

    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    # attention runs inside the wrapped encoder, which checked its own implementation already
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules: list = []

    def __init__(self, config, encoder: nn.Module, pooling: str = "mean", head_hidden: int = 0):
        super().__init__(config)
        drop_unused_pooler(encoder)
        self.encoder = encoder
        self.pooling = pooling
        self.num_labels = config.num_labels
        self.classifier = make_head(config.hidden_size, config.num_labels, head_hidden,
                                    getattr(config, "hidden_dropout_prob", 0.1) or 0.1)
        self.classifier.to(next(encoder.parameters()).device)

    # peft and the Trainer look these up on the model itself.
    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.encoder.set_input_embeddings(value)

    def pooled(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs) -> torch.Tensor:
        kwargs.pop("labels", None)
        kwargs = {k: v for k, v in kwargs.items() if v is not None and k in ("token_type_ids", "past_key_values",
                                                                               "position_ids")}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                           **kwargs)
        return self.pool(out.last_hidden_state, attention_mask)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device, dtype=torch.long)
        if attention_mask.shape[1] != hidden.shape[1]:
            # prefix tuning lengthens the mask by the virtual tokens that have no hidden state here
            attention_mask = attention_mask[:, -hidden.shape[1]:]
        if self.pooling == "cls":
            return hidden[:, 0]
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None,
                past_key_values=None, **kwargs):
        # past_key_values is named in the signature on purpose: peft's prefix tuning looks for it
        # there and, not finding it, bypasses this forward (the encoder's [CLS] pooler output
        # straight into the head, no mean pooling).
        if past_key_values is not None:
            kwargs["past_key_values"] = past_key_values
        kwargs.pop("return_dict", None)
        kwargs.pop("output_attentions", None)
        kwargs.pop("output_hidden_states", None)
        return self.classify(self.pooled(input_ids, attention_mask, inputs_embeds, **kwargs), labels)

    def classify(self, features: torch.Tensor, labels=None) -> SequenceClassifierOutput:
        """Pooled features -> logits (and the loss): the one tail of every path through this model,
        also the cached-prefix one (core.prefix_cache)."""
        head = self.classifier
        head_dtype = next(head.parameters()).dtype
        logits = head(features.to(head_dtype))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


class HeadOnFeatures(nn.Module):
    """The head alone, trained on cached pooled features of a frozen base (linear_head method)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.classifier = head

    def forward(self, features=None, labels=None, **_):
        logits = self.classifier(features)
        loss = nn.functional.cross_entropy(logits.float(), labels.view(-1)) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
