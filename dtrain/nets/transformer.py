"""Transformer over token sequences: decoder-only (causal=True, GPT-style), encoder-only
(causal=False, BERT-style) or encoder-decoder (encoder_layers > 0, T5-style), pre-norm blocks,
learned positions, no weight tying.

The net declares how it may be split (dtrain.nets.plans): `tensor_parallel_plan()` names its
attention and MLP layers for a Megatron split, `pipeline_layers()` gives it as an ordered stack
(embed, blocks, head). Heads are inferred from the tensors, which lets a tensor-parallel rank hold
a subset of them without any change here.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from dtrain.nets.plans import TensorParallelPlan


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, causal: bool):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.head_dim = d_model // n_heads
        self.causal = causal
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Self-attention, or cross-attention to `context` (keys and values from an encoder)."""
        batch, length, _ = x.shape
        source = x if context is None else context
        q = self.q(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        k, v = (proj(source).view(batch, source.shape[1], -1, self.head_dim).transpose(1, 2) for proj in (self.k, self.v))
        mask = None if padding_mask is None else padding_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal and mask is None and context is None,
        )
        return self.out(y.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float):
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, causal: bool, mlp_ratio: int = 4, cross: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, dropout, causal)
        if cross:  # a decoder block of an encoder-decoder also attends to the encoder's output
            self.norm_cross = nn.LayerNorm(d_model)
            self.cross = Attention(d_model, n_heads, dropout, causal=False)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = FeedForward(d_model, mlp_ratio * d_model, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), padding_mask))
        if memory is not None:
            x = x + self.dropout(self.cross(self.norm_cross(x), context=memory))
        return x + self.mlp(self.norm2(x))


class Embedding(nn.Module):
    def __init__(self, vocab_size: int, max_len: int, d_model: int, dropout: float):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.dropout(self.tokens(tokens) + self.positions(positions))


class Head(nn.Module):
    def __init__(self, d_model: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


class MeanPool(nn.Module):
    """(batch, length, d_model) -> (batch, d_model): one vector per sequence, for sequence labels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class Transformer(nn.Module):
    """Tokens (batch, length) -> logits (batch, length, out_features or vocab_size), or with
    `pool="mean"` one output per sequence (batch, out_features), e.g. a classification head."""

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        dropout: float = 0.1,
        causal: bool = True,
        out_features: int | None = None,
        encoder_layers: int = 0,
        pool: str = "none",
        tie_embeddings: bool = False,
    ):
        super().__init__()
        if pool not in ("none", "mean"):
            raise ValueError(f"pool={pool!r}: choose none (an output per token) or mean (one per sequence)")
        if tie_embeddings and out_features not in (None, vocab_size):
            raise ValueError(f"tie_embeddings needs out_features == vocab_size ({vocab_size}), got {out_features}")
        self.max_len = max_len
        self.embed = Embedding(vocab_size, max_len, d_model, dropout)
        if encoder_layers:
            # Encoder-decoder: `blocks` are the (causal) decoder, reading the encoder's output of
            # `source` through cross-attention; both sides share the token embedding.
            self.encoder = nn.ModuleList(Block(d_model, n_heads, dropout, causal=False) for _ in range(encoder_layers))
            self.encoder_norm = nn.LayerNorm(d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout, causal, cross=bool(encoder_layers)) for _ in range(n_layers))
        self.pool = MeanPool() if pool == "mean" else nn.Identity()
        self.head = Head(d_model, out_features or vocab_size)
        self.apply(self._init_weights)
        if tie_embeddings:  # the output layer reuses the token embeddings (same vocabulary in and out)
            self.head.proj.weight = self.embed.tokens.weight
        for name, p in self.named_parameters():
            if name.endswith(("attn.out.weight", "mlp.down.weight")):  # GPT-2's residual scaling
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        """The encoder's output for `source` (batch, source length) in an encoder-decoder."""
        x = self.embed(source)
        for block in self.encoder:
            x = block(x)
        return self.encoder_norm(x)

    def features(
        self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hidden states before the head: (batch, length, d_model)."""
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len={self.max_len}")
        if hasattr(self, "encoder") != (source is not None):
            raise ValueError("an encoder-decoder (encoder_layers > 0) needs `source`; other transformers take none")
        memory = None if source is None else self.encode(source)
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, padding_mask, memory)
        return x

    def forward(
        self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.head(self.pool(self.features(tokens, padding_mask, source)))

    def pipeline_layers(self) -> list[nn.Module]:
        """The net as ordered layers, each fed the previous one's output: running them in turn on
        tokens equals forward(tokens) (no padding mask). Pipeline parallelism splits this list."""
        pooling = [] if isinstance(self.pool, nn.Identity) else [self.pool]
        return [self.embed, *self.blocks, *pooling, self.head]

    def tensor_parallel_plan(self) -> TensorParallelPlan:
        """Every block's attention (self and cross) split by heads: q/k/v by columns, the output
        projection by rows; its MLP's first layer by columns, the second by rows. One all-reduce
        per sub-layer; embeddings, norms and the head stay whole."""
        colwise, rowwise, heads = [], [], {}
        stacks = [("blocks", self.blocks)] + ([("encoder", self.encoder)] if hasattr(self, "encoder") else [])
        for stack, blocks in stacks:
            for index, block in enumerate(blocks):
                prefix = f"{stack}.{index}"
                for attention in ("attn", "cross"):
                    layer = getattr(block, attention, None)
                    if layer is not None:
                        colwise += [f"{prefix}.{attention}.{name}" for name in ("q", "k", "v")]
                        rowwise.append(f"{prefix}.{attention}.out")
                        heads[f"{prefix}.{attention} heads"] = layer.q.out_features // layer.head_dim
                colwise.append(f"{prefix}.mlp.up")
                rowwise.append(f"{prefix}.mlp.down")
        return TensorParallelPlan(colwise=tuple(colwise), rowwise=tuple(rowwise), divisible=heads)

    @staticmethod
    def tensor_parallel_counts(d_model: int, n_heads: int) -> dict[str, int]:
        """What tensor_parallel_plan() cuts, from the constructor's arguments: every attention's
        heads, and d_model (the MLP's 4 x d_model hidden units follow from it)."""
        return {"n_heads": n_heads, "d_model": d_model}

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward), nanoGPT's 6N + attention estimate."""
        n_params = sum(p.numel() for p in self.parameters()) - self.embed.positions.weight.numel()
        d_model = self.embed.tokens.embedding_dim
        return 6 * n_params + 12 * len(self.blocks) * d_model * self.max_len
