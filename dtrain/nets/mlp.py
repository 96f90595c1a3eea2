"""Multi-layer perceptron: configurable depth, width, dropout and normalisation."""

from torch import nn

_NORMS = {"none": None, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 128,
        depth: int = 2,
        dropout: float = 0.0,
        norm: str = "none",
        activation: type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm={norm!r}: choose one of {sorted(_NORMS)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers.append(nn.Linear(width, hidden))
            if _NORMS[norm] is not None:
                layers.append(_NORMS[norm](hidden))
            layers += [activation(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
