"""Pipeline stages: the net's `pipeline_layers()` cut into consecutive groups of about equal
parameter count, and the placeholder a rank keeps where another stage's layer was."""

from torch import nn

from dtrain.config.errors import ConfigError


class ElsewhereLayer(nn.Module):
    """Where a layer of another pipeline stage was: no tensors, and a clear error if run."""

    def __init__(self, stage: int):
        super().__init__()
        self.stage = stage

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"this layer is held by pipeline stage {self.stage}, not by this rank")

    def extra_repr(self) -> str:
        return f"stage={self.stage}"


def split_points(costs: list[int], stages: int) -> list[int]:
    """Boundaries [0, ..., len(costs)] of `stages` consecutive, non-empty groups whose largest
    total cost is as small as possible (costs are parameter counts)."""
    n = len(costs)
    prefix = [0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    # best[s][i]: smallest max-stage cost splitting the first i layers into s stages
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for s in range(1, stages + 1):
        for i in range(s, n + 1):
            for j in range(s - 1, i):
                value = max(best[s - 1][j], prefix[i] - prefix[j])
                if value < best[s][i]:
                    best[s][i], cut[s][i] = value, j
    bounds, i = [n], n
    for s in range(stages, 0, -1):
        i = cut[s][i]
        bounds.append(i)
    return bounds[::-1]


def split_layers(net: nn.Module, stages: int) -> list[list[nn.Module]]:
    """The net's pipeline_layers() in `stages` consecutive groups of about equal parameter count."""
    layers = list(net.pipeline_layers())
    if len(layers) < stages:
        raise ConfigError("trainer.strategy.stages", f"the net has {len(layers)} layers, fewer than {stages} stages; use at most {len(layers)}")
    bounds = split_points([sum(p.numel() for p in layer.parameters()) + 1 for layer in layers], stages)
    return [layers[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def stage_parameter_counts(net: nn.Module, stages: int) -> list[int]:
    """Parameters each stage holds (what dtrain.plan counts per rank)."""
    return [sum(p.numel() for layer in group for p in layer.parameters()) for group in split_layers(net, stages)]
