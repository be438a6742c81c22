"""SASRec (Kang & McAuley, 2018), as RecBole implements it: learned positions counted from each
sequence's first real item, LayerNorm and dropout on the embedded input, post-norm Transformer
blocks with GELU and dropout on each block's outputs (not inside the feed-forward, where PyTorch's
layer would put a third one), causal attention that never attends to padding, N(0, 0.02)
initialisation.

Inside the encoder the rows are right-aligned (real items first, padding after), so the causal
mask alone keeps every real position away from padding keys and attention runs as PyTorch's
fused causal kernel; the states go back to the batch's left padding afterwards. Dropout on the
attention weights is separate from the hidden dropout (RecBole ties both at 0.5): on CPU it
doubles the step time, so it is off by default; the hidden dropout is kept."""

from __future__ import annotations

import torch
from torch import nn

from reki_spark.models.sequential import SeqModel

INIT_STD = 0.02


class SasRec(SeqModel):
    def __init__(
        self,
        *args,
        layers: int = 2,
        heads: int = 2,
        inner: int = 256,
        dropout: float = 0.5,
        attention_dropout: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        width = self.embedding_dim
        self.positions = nn.Embedding(self.schema.max_length, width)
        self.input_norm = nn.LayerNorm(width, eps=1e-12)
        self.input_dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=inner, dropout=dropout, activation="gelu", batch_first=True
        )
        self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        for layer in self.transformer.layers:
            layer.self_attn.dropout = attention_dropout
            # PyTorch's layer also drops the feed-forward's inner activations; RecBole's (and
            # Kang & McAuley's) blocks drop only the attention and feed-forward outputs.
            layer.dropout.p = 0.0
        self._initialise()

    def _initialise(self) -> None:
        for name, parameter in self.named_parameters():
            if "norm" in name or name.startswith("adapter."):
                continue  # LayerNorm keeps weight 1 and bias 0; HEIN keeps its own initialisation
            if parameter.dim() > 1:
                nn.init.normal_(parameter, std=INIT_STD)
            else:
                nn.init.zeros_(parameter)
        self.item_embedding.weight.data[0].zero_()
        self.reset_knowledge_projections()

    def encode(self, embedded: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        length = sequence.shape[1]
        # Left padding -> right alignment: row b's item j moves to (j - padding_b) mod length.
        padding = length - (sequence > 0).sum(1, keepdim=True)
        columns = torch.arange(length, device=sequence.device).unsqueeze(0)
        to_left = ((columns + padding) % length).unsqueeze(-1).expand_as(embedded)
        aligned = embedded.gather(1, to_left)
        # Position 0 is the first real item whatever the padding, in training and at evaluation.
        hidden = self.input_dropout(self.input_norm(aligned + self.positions.weight[:length]))
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=sequence.device)
        states = self.transformer(hidden, mask=causal, is_causal=True)
        to_right = ((columns - padding) % length).unsqueeze(-1).expand_as(states)
        return states.gather(1, to_right)
