"""Training-step time against sequence length, for nets built from dtrain's own model configs."""

import math
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LengthScaling:
    model: str
    lengths: list[int]
    step_seconds: list[float]  # the fastest timed step, per length: the least disturbed by other load
    median_seconds: list[float]
    params: int
    exponent: float = math.nan  # fitted t ~ L^k over all lengths
    exponent_long: float = math.nan  # over the three longest (where the asymptotic cost shows)
    samples: dict = field(default_factory=dict)  # every timed step, per length (for the record)


def build_net(model: str, overrides: list[str], max_len: int):
    """The net of `model=<model>` (with `overrides`), sized for sequences up to `max_len`, and
    a function making an input batch of a given (batch, length)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from dtrain.config.compose import compose

    cfg = compose([f"model={model}", *overrides])
    with open_dict(cfg):
        # The shapes a datamodule would give: byte tokens for token nets, one feature per step
        # (the sunspot series) for recurrent nets.
        cfg.shapes = {"vocab_size": 256, "block_size": max_len, "num_features": 1, "num_outputs": 1, "num_classes": 10}
    net = instantiate(cfg.model.net)
    takes_tokens = hasattr(net, "embed")

    def batch(size: int, length: int):
        generator = torch.Generator().manual_seed(length)
        if takes_tokens:
            return torch.randint(0, 256, (size, length), generator=generator)
        return torch.randn(size, length, 1, generator=generator)

    return net, batch


def time_steps(specs: dict[str, list[str]], lengths: list[int], batch_size: int, steps: int) -> list[LengthScaling]:
    """Seconds per training step (forward, a mean-square loss, backward, AdamW) for each model
    and length: the fastest of `steps` and their median. Rounds are interleaved over models and
    lengths, so that a load that comes and goes on a shared machine falls on all of them rather
    than on one; the fastest step is the one it disturbed least."""
    import torch

    nets = {}
    for model, overrides in specs.items():
        net, make_batch = build_net(model, list(overrides), max(lengths))
        nets[model] = (net, torch.optim.AdamW(net.parameters(), lr=1e-4), {n: make_batch(batch_size, n) for n in lengths})

    def one_step(model: str, length: int) -> float:
        net, optimizer, inputs = nets[model]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out = net(inputs[length])
        out.float().square().mean().backward()
        optimizer.step()
        return time.perf_counter() - start

    samples = {model: {n: [] for n in lengths} for model in specs}
    for model in specs:  # untimed: first-call allocations and kernel selection
        for n in lengths:
            one_step(model, n)
    for _ in range(steps):
        for n in lengths:
            for model in specs:
                samples[model][n].append(one_step(model, n))
    results = []
    for model in specs:
        fastest = [float(np.min(samples[model][n])) for n in lengths]
        medians = [float(np.median(samples[model][n])) for n in lengths]
        params = sum(p.numel() for p in nets[model][0].parameters())
        results.append(LengthScaling(model, list(lengths), fastest, medians, params, *growth_exponents(lengths, fastest), samples=samples[model]))
    return results


def growth_exponents(lengths: list[int], seconds: list[float]) -> tuple[float, float]:
    """k in t ~ L^k by least squares on log-log, over all lengths and over the three longest."""
    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(seconds, float))
    if len(x) < 2:
        return math.nan, math.nan
    overall = float(np.polyfit(x, y, 1)[0])
    longest = float(np.polyfit(x[-3:], y[-3:], 1)[0]) if len(x) >= 3 else overall
    return overall, longest
