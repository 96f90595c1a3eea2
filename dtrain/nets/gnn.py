"""Graph neural nets from torch_geometric: GCN or GAT layers (by `conv`), for node or graph labels."""

import torch
from torch import nn

from dtrain.extras import require


class GNN(nn.Module):
    """`forward(x, edge_index, batch=None)`: node features (nodes, in_features) -> logits per
    node, or per graph when `pool` is set ("mean", "add" or "max" over each graph's nodes)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        conv: str = "gcn",
        hidden: int = 16,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.5,
        pool: str | None = None,
    ):
        super().__init__()
        require("graph", "torch_geometric", f"model/net={conv}")
        from torch_geometric import nn as gnn

        if conv not in ("gcn", "gat"):
            raise ValueError(f"conv={conv!r}: choose gcn or gat")
        self.pool = {None: None, "mean": gnn.global_mean_pool, "add": gnn.global_add_pool, "max": gnn.global_max_pool}[pool]
        self.convs = nn.ModuleList()
        width = in_features
        for i in range(layers):
            last = i == layers - 1 and pool is None  # node logits come straight from the last layer
            out = out_features if last else hidden
            if conv == "gcn":
                self.convs.append(gnn.GCNConv(width, out))
                width = out
            else:
                # Hidden GAT layers concatenate their heads; the output layer averages them.
                self.convs.append(gnn.GATConv(width, out, heads=1 if last else heads, concat=not last, dropout=dropout))
                width = out if last else out * heads
        self.head = nn.Linear(width, out_features) if pool is not None else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(self.dropout(x), edge_index)
            if i < len(self.convs) - 1 or self.pool is not None:
                x = self.act(x)
        if self.pool is not None:
            x = self.pool(x, batch)
        return self.head(x)
