"""`python -m dtrain.plan <overrides>`: parameters, FLOPs and memory per device of a run under its
strategy and precision, the fit against the device, and the strategy to choose; nothing trains.

The net is built on the meta device (no memory, no time); FLOPs and saved activations are
counted by running one sample through it there (FLOP counting on real CPU tensors misses
scaled-dot-product attention).

A user's own LightningModule (`model._target_=...`) is built whole and its `forward` counted; a
plain LightningDataModule (`data._target_=...`, no dtrain `shapes` or `train_set`) lends the
first tensor of its first training batch as the input and that batch's size as the micro-batch
of every device (Lightning's sampler splits the data, not the batch); one warning line says so,
and what the plan could not learn from it.
"""

import sys
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from dtrain.parallel.dims import strategy_kind

GIB = 1024**3
_BYTES = {"64": 8, "32": 4, "16": 2, "bf16": 2}


def _precision(precision: str) -> tuple[int, int, bool]:
    """(bytes of a stored weight, bytes of an activation, mixed?) for a Lightning precision string."""
    precision = str(precision)
    head, _, kind = precision.partition("-")
    if head in ("16", "bf16") and kind == "mixed":
        return 4, 2, True
    return _BYTES.get(head, 4), _BYTES.get(head, 4), False


def _optimizer_states(cfg: DictConfig) -> int:
    """Tensors of parameter size the optimizer keeps per parameter."""
    target = str(OmegaConf.select(cfg, "model.optimizer._target_", default="")).lower()
    if "adam" in target:
        return 2
    if "sgd" in target:
        return 1 if OmegaConf.select(cfg, "model.optimizer.momentum", default=0) else 0
    return 2


@dataclass
class Plan:
    params: int
    flops_per_sample: float | None
    activation_bytes_per_sample: float | None
    devices: int
    micro_batch: int
    strategy: str
    precision: str
    device_bytes: dict[str, float] = field(default_factory=dict)  # per device
    host_bytes: dict[str, float] = field(default_factory=dict)  # per process, moved off the device
    device_memory: float | None = None
    recommendation: str = ""

    @property
    def total(self) -> float:
        return sum(self.device_bytes.values())

    def report(self) -> str:
        lines = [
            f"parameters            {self.params:,} ({self.params / 1e6:.1f}M)",
            f"FLOPs per sample      {self.flops_per_sample:.3g} (forward + backward)" if self.flops_per_sample else "FLOPs per sample      unknown (the net's input could not be built)",
            f"strategy / precision  {self.strategy} on {self.devices} device(s), {self.precision}, micro-batch {self.micro_batch} per device",
            "memory per device:",
        ]
        for name, value in self.device_bytes.items():
            lines.append(f"  {name:<20}{value / GIB:9.3f} GiB")
        lines.append(f"  {'total':<20}{self.total / GIB:9.3f} GiB")
        for name, value in self.host_bytes.items():
            lines.append(f"  host: {name:<14}{value / GIB:9.3f} GiB (offloaded)")
        if self.device_memory:
            verdict = "fits" if self.total <= 0.9 * self.device_memory else "does NOT fit"
            lines.append(f"device memory         {self.device_memory / GIB:.1f} GiB: {verdict} ({100 * self.total / self.device_memory:.0f}% used)")
        lines.append(f"recommended           {self.recommendation}")
        return "\n".join(lines)


def memory(params: int, activations: float, kind: str, stage: int, offload_opt: bool,
           offload_param: bool, devices: int, precision: str, states: int) -> tuple[dict, dict]:
    """Bytes per device (and per process on the host) of weights, gradients, optimizer state and
    activations, dividing what the strategy shards among `devices` ranks."""
    weight, _, mixed = _precision(precision)
    if kind == "deepspeed" and mixed:  # DeepSpeed holds the module in 16 bit, fp32 masters in the optimizer
        weight = 2
    shard_w = shard_g = shard_o = 1
    if kind == "fsdp":
        shard_w = shard_g = shard_o = devices
    elif kind == "deepspeed":
        shard_o = devices
        shard_g = devices if stage >= 2 else 1
        shard_w = devices if stage >= 3 else 1
    device = {
        "weights": params * weight / shard_w,
        "gradients": params * weight / shard_g,
        "optimizer state": params * states * (4 if mixed or kind == "deepspeed" else weight) / shard_o,
    }
    if kind == "deepspeed":  # ZeRO keeps an fp32 master copy of its partition in the optimizer
        device["optimizer state"] += params * 4 / shard_o
    elif kind == "ddp":  # DDP's all-reduce buckets hold a second copy of the gradients
        device["gradients"] *= 2
    # torch's Adam steps all tensors at once (foreach) through one parameter-sized temporary (sqrt v)
    device["optimizer step"] = params * (4 if mixed or kind == "deepspeed" else weight) / shard_o if states == 2 else 0.0
    device["activations"] = activations
    host = {}
    if offload_opt:
        host["optimizer state"] = device.pop("optimizer state") + device.pop("optimizer step")
    if offload_param:
        host["weights"] = device.pop("weights")
    return device, host


def recommend(params: int, act_bytes: float, devices: int, device_memory: float | None, precision: str, states: int) -> str:
    """The least sharding that fits: DDP, then ZeRO-2, FSDP / ZeRO-3, then offload."""
    budget = 0.9 * device_memory if device_memory else None
    if devices == 1:
        options = [("cpu/gpu (one device)", "auto", 0, False, False)]
    else:
        options = [("ddp", "ddp", 0, False, False), ("deepspeed_zero2", "deepspeed", 2, False, False),
                   ("fsdp (or deepspeed_zero3)", "fsdp", 3, False, False)]
    options += [("deepspeed_zero2_offload", "deepspeed", 2, True, False), ("deepspeed_zero3_offload", "deepspeed", 3, True, True)]
    for name, kind, stage, off_o, off_p in options:
        device, _ = memory(params, act_bytes, kind, stage, off_o, off_p, devices, precision, states)
        if budget is None or sum(device.values()) <= budget:
            return name if budget else f"{name} (device memory unknown: pass plan.device_memory_gib=N)"
    return "nothing fits: add devices, use bf16-true, activation checkpointing or a smaller micro-batch"


_LOWER_PRECISION = ("linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "conv1d", "conv2d", "conv3d",
                    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "scaled_dot_product_attention", "prelu")


def _meta_mode(mixed: bool):
    """Make the meta device save for backward what a real run saves. torch.autocast ignores meta
    tensors, so with `mixed` the inputs of autocast's lower-precision ops are cast to bf16 by hand,
    above autograd. And attention on meta would take the unfused path that keeps the (length x
    length) weights in fp32; real runs use a fused kernel (flash on the CPU, flash or
    memory-efficient on GPUs) that keeps only the output and a logsumexp."""
    import torch
    from torch.overrides import TorchFunctionMode

    def cast(a):
        return a.to(torch.bfloat16) if mixed and isinstance(a, torch.Tensor) and a.dtype == torch.float32 else a

    class MetaLikeReal(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            if name in _LOWER_PRECISION:
                args, kwargs = [cast(a) for a in args], {k: cast(v) for k, v in kwargs.items()}
            if name == "scaled_dot_product_attention":
                q, k, v = args[:3]
                return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    q, k, v, kwargs.get("dropout_p", 0.0), kwargs.get("is_causal", False),
                    attn_mask=kwargs.get("attn_mask"), scale=kwargs.get("scale"),
                )[0]
            return func(*args, **kwargs)

    return MetaLikeReal()


def _count(net, sample, weight_dtype, mixed: bool, batch: int) -> tuple[float, float]:
    """FLOPs (forward + backward) and bytes of the tensors saved for backward (parameters excluded,
    each storage once) for a batch of `batch` copies of `sample`, on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = {p.untyped_storage()._cdata for p in net.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage._cdata not in params:
            saved[storage._cdata] = storage.nbytes()
        return t

    x = torch.zeros_like(sample, device="meta")[None].expand(batch, *sample.shape).contiguous()
    if x.is_floating_point():
        x = x.to(weight_dtype)
    counter = FlopCounterMode(display=False)
    with counter:
        with _meta_mode(mixed), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = net(x)
        out.float().sum().backward()
    return float(counter.get_total_flops()), float(sum(saved.values()))


def _meta_saved(net, sample, weight_dtype, mixed) -> tuple[float | None, float | None, float, str]:
    """(FLOPs per sample, saved bytes per sample, saved bytes per step whatever the batch: the
    low-precision copies of the weights that mixed precision keeps for backward, and why the
    first two are unknown where they are)."""
    if sample is None:
        return None, None, 0.0, ""
    try:
        flops1, saved1 = _count(net, sample, weight_dtype, mixed, 1)
        flops2, saved2 = _count(net, sample, weight_dtype, mixed, 2)
        return flops2 - flops1, saved2 - saved1, max(0.0, 2 * saved1 - saved2), ""
    except Exception as error:  # a net whose input is not the sample's first tensor
        return None, None, 0.0, f"could not run the net on one sample ({_first_line(error)}), so FLOPs and activations unknown"


def _first_line(error: Exception) -> str:
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def _first_tensor(batch):
    """The first tensor of a batch as a loader gives it (a tensor, a tuple or list, a dict)."""
    import torch

    if isinstance(batch, torch.Tensor):
        return batch
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def _sample(datamodule, cfg: DictConfig, devices: int) -> tuple[object, int, list[str]]:
    """(one training sample or None, the micro-batch per device, what the plan cannot know).

    dtrain's datamodules give their `train_set` and split the global `data.batch_size` over the
    ranks; any other gives its first training batch, whose size every rank loads."""
    from dtrain.data.base import per_device_batch
    from dtrain.data.foreign import is_dtrain_datamodule

    if is_dtrain_datamodule(datamodule):
        datamodule.setup("fit")
        sample = datamodule.train_set[0]
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        micro = per_device_batch(cfg.data.batch_size, devices, int(cfg.trainer.get("accumulate_grad_batches", 1)))
        return sample, micro, []
    try:  # no prepare_data: a plan downloads nothing
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        first = _first_tensor(next(iter(loader)))
        if first is None:
            raise ValueError("its first training batch holds no tensor")
    except Exception as error:
        micro = getattr(datamodule, "batch_size", None)
        micro = micro if isinstance(micro, int) and micro > 0 else 1
        return None, micro, [
            f"no training batch ({_first_line(error)}), so FLOPs and activations unknown"
            f"{'' if micro > 1 else ' and a micro-batch of 1 assumed'}"
        ]
    micro = loader.batch_size if isinstance(getattr(loader, "batch_size", None), int) else len(first)
    return first[0], micro, [
        f"the first tensor of its first training batch taken as the net's input and that batch's size "
        f"({micro}) as each device's micro-batch (data.batch_size is not split over ranks)"
    ]


def make_plan(cfg: DictConfig, device_memory_gib: float | None = None) -> Plan:
    import torch
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from dtrain.config.user_targets import leave_out_foreign_keys
    from dtrain.config.validate import _device_count, uses_gpu
    from dtrain.data.foreign import data_shapes, is_dtrain_datamodule
    from dtrain.train import net_must_fit_data

    trainer = cfg.trainer
    gpu = uses_gpu(trainer)
    devices = _device_count(trainer.get("devices", 1), torch.cuda.device_count() if gpu else 1) * int(trainer.get("num_nodes", 1))

    leave_out_foreign_keys(cfg)  # dtrain's default keys beside a user's own _target_, as a run does
    with open_dict(cfg):
        cfg.paths.run_dir = None  # a plan is no run: a datamodule saves nothing (a learned BPE)
    datamodule = instantiate(cfg.data)
    with open_dict(cfg):
        cfg.shapes = data_shapes(datamodule)
    leave_out_foreign_keys(cfg, cfg.shapes)
    sample, micro, unknown = _sample(datamodule, cfg, devices)
    precision = str(cfg.trainer.precision)
    weight, act_bytes, mixed = _precision(precision)
    dtype = {8: torch.float64, 4: torch.float32, 2: torch.bfloat16}[weight if not mixed else 4]
    own_module = not str(cfg.model.get("_target_", "")).startswith("dtrain.")
    with net_must_fit_data(cfg), torch.device("meta"):  # a net the data gives no shapes for: one line
        net = instantiate(cfg.model if own_module else cfg.model.net).to(dtype)  # a user's module: its forward
    params = sum(p.numel() for p in net.parameters())
    flops, act, fixed, failed = _meta_saved(net, sample, dtype, mixed)
    if own_module and "optimizer" not in cfg.model:
        unknown.append("its optimizer taken for Adam (no model.optimizer)")
    notes = unknown + ([failed] if failed else [])
    if notes:  # one line: what this plan could not know
        foreign = "" if is_dtrain_datamodule(datamodule) else f"data={cfg.data._target_} is not a dtrain DataModule: "
        print(f"plan: {foreign}{'; '.join(notes)}", file=sys.stderr)

    kind = strategy_kind(trainer)
    strategy = trainer.strategy
    stage = 0 if isinstance(strategy, str) else int(strategy.get("stage", 0) or 0)
    off_o = not isinstance(strategy, str) and bool(strategy.get("offload_optimizer"))
    off_p = not isinstance(strategy, str) and bool(strategy.get("offload_parameters"))
    if kind in ("auto", "single_device") and devices > 1:
        kind = "ddp"
    states = _optimizer_states(cfg)
    held = _pipeline_stage_params(net, strategy) if kind == "Pipeline" else params
    device, host = memory(held, (act or 0.0) * micro + fixed, kind, stage, off_o, off_p, devices, precision, states)
    if device_memory_gib:
        device_memory = device_memory_gib * GIB
    elif gpu and torch.cuda.is_available():
        device_memory = torch.cuda.get_device_properties(0).total_memory
    else:
        device_memory = None
    name = f"{kind}" + (f" ZeRO-{stage}" if kind == "deepspeed" else "") + (" offload" if off_o else "")
    return Plan(
        params=params, flops_per_sample=flops, activation_bytes_per_sample=act, devices=devices, micro_batch=micro,
        strategy=name, precision=precision, device_bytes=device, host_bytes=host, device_memory=device_memory,
        recommendation=recommend(params, (act or 0.0) * micro + fixed, devices, device_memory, precision, states),
    )


def _pipeline_stage_params(net, strategy) -> int:
    """Parameters of the largest pipeline stage: a rank holds only its stage's weights, gradients
    and optimizer state (the stages split as trainer=pipeline splits them). A net without
    pipeline_layers() counts whole (the run itself refuses it)."""
    from dtrain.parallel.pipeline_stages import stage_parameter_counts

    holder = net if callable(getattr(net, "pipeline_layers", None)) else next(
        (child for child in net.children() if callable(getattr(child, "pipeline_layers", None))), None)
    if holder is None:
        return sum(p.numel() for p in net.parameters())
    stages = 2 if isinstance(strategy, str) else int(strategy.get("stages", 2))
    return max(stage_parameter_counts(holder, stages))


def main(argv: list[str]) -> None:
    from dtrain.cli_errors import exit_on_config_error
    from dtrain.config.compose import compose

    memory_gib = None
    overrides = []
    for arg in argv:
        if arg.startswith("plan.device_memory_gib="):
            memory_gib = float(arg.split("=", 1)[1])
        else:
            overrides.append(arg)

    def plan():
        print(make_plan(compose(overrides), memory_gib).report())

    exit_on_config_error(plan)


if __name__ == "__main__":
    main(sys.argv[1:])
