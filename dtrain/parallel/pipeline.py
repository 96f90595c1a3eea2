"""Pipeline parallelism: the net split into consecutive stages, one per rank, micro-batches
flowing through them on a GPipe or 1F1B schedule (torch.distributed.pipelining).

Lightning has no pipeline strategy, so this is dtrain's. The schedule runs forward, loss and
backward of all micro-batches itself, so the strategy owns the training step. It assumes
nothing of the task and only one thing of the net: `pipeline_layers()`, its ordered layers
(dtrain.nets.transformer has it). The task's own `training_step` supplies everything else:

- the first stage's input is whatever the task passes to its net (found by running the task's
  step up to that call);
- the loss of a micro-batch is the task's step run on that micro-batch with the net's output
  put in place of the net.

Each rank trains only its stage's parameters (the others get no gradient, so optimizers skip
them; optimizer state exists only for the rank's stage). Every rank keeps the whole net, which
is brought up to date from the stages' owners whenever it is used whole: validation, test,
prediction, checkpoints and the end of training. Pipelines can be replicated: with
world = data_parallel x stages, replicas all-reduce their stage's gradients.
"""

from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from dtrain.config.errors import ConfigError

SCHEDULES = ("gpipe", "1f1b")


class _Captured(Exception):
    def __init__(self, args, kwargs):
        self.args, self.kwargs = args, kwargs


class _CaptureInput(nn.Module):
    """Stands in for the net to learn what the task feeds it, then stops the step."""

    def forward(self, *args, **kwargs):
        raise _Captured(args, kwargs)


class _GivenOutput(nn.Module):
    """Stands in for the net, returning the pipeline's output for this micro-batch."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, *args, **kwargs):
        return self.output


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


class Pipeline(DDPStrategy):
    """`stages` ranks (consecutive global ranks) each run one stage of the net; the batch each
    of them loads is the same and is cut into `microbatches` micro-batches.

    schedule: "gpipe" (all forwards, then all backwards) or "1f1b" (one forward, one backward,
    in steady state: less activation memory).
    """

    def __init__(self, stages: int = 2, microbatches: int = 4, schedule: str = "1f1b", **kwargs):
        super().__init__(**kwargs)
        if schedule.lower() not in SCHEDULES:
            raise ConfigError("trainer.strategy.schedule", f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
        if stages < 1 or microbatches < 1:
            raise ConfigError("trainer.strategy.stages", "stages and microbatches must be positive integers")
        self.stages, self.microbatches, self.schedule_name = stages, microbatches, schedule.lower()
        self._schedule = None
        self._stage_modules: list[list[nn.Module]] = []
        self._pp_group = self._dp_group = None
        self._new_grads: list[torch.Tensor | None] = []

    @property
    def parallel_dims(self):
        from dtrain.parallel.dims import pipelines

        return pipelines(self.stages, self.world_size)

    @property
    def stage_index(self) -> int:
        return self.global_rank % self.stages

    @property
    def distributed_sampler_kwargs(self) -> dict:
        """Lightning's sampler (for a datamodule that does not shard itself) must give every
        stage of one replica the same share: the data-parallel size and rank, not the world's."""
        return {"num_replicas": self.world_size // self.stages, "rank": self.global_rank // self.stages}

    # -- set-up -------------------------------------------------------------------------------
    def setup(self, trainer) -> None:
        if self.world_size % self.stages:
            raise ConfigError("trainer.strategy.stages", f"{self.stages} stages do not divide the {self.world_size} processes; use a divisor of {self.world_size}")
        if trainer.gradient_clip_val:
            raise ConfigError("trainer.gradient_clip_val", "gradient clipping is not supported with trainer=pipeline (each rank sees only its stage's gradients); set it to null")
        self.accelerator.setup(trainer)
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        if self._pp_group is None:
            self._make_groups()
            self._stage_modules = self._split(self.lightning_module)
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if trainer.state.fn == TrainerFn.FITTING:
            from lightning.fabric.utilities.optimizer import _optimizers_to_device

            _optimizers_to_device(self.optimizers, self.root_device)
        self.sync_stages()

    def _setup_model(self, model: nn.Module) -> nn.Module:
        return model  # no DDP wrapper: the schedule does forward and backward, gradients are reduced here

    def _make_groups(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(self.root_device.type, (self.world_size // self.stages, self.stages), mesh_dim_names=("data_parallel", "pipeline"))
        self._pp_group, self._dp_group = mesh["pipeline"].get_group(), mesh["data_parallel"].get_group()
        self._pp_ranks = dist.get_process_group_ranks(self._pp_group)

    def _net_slot(self, module: nn.Module) -> str:
        names = [name for name, child in module.named_children() if callable(getattr(child, "pipeline_layers", None))]
        if len(names) != 1:
            raise ConfigError("trainer", f"trainer=pipeline needs a task holding one net with a pipeline_layers() method (found {len(names)}); use another strategy for this model")
        return names[0]

    def _split(self, module: nn.Module) -> list[list[nn.Module]]:
        layers = list(getattr(module, self._net_slot(module)).pipeline_layers())
        if len(layers) < self.stages:
            raise ConfigError("trainer.strategy.stages", f"the net has {len(layers)} layers, fewer than {self.stages} stages; use at most {len(layers)}")
        bounds = split_points([sum(p.numel() for p in layer.parameters()) + 1 for layer in layers], self.stages)
        return [layers[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def _build_schedule(self, example_batch_size: int) -> None:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        if example_batch_size % self.microbatches:
            raise ConfigError("trainer.strategy.microbatches", f"the per-replica batch {example_batch_size} does not split into {self.microbatches} micro-batches; use a divisor of it")
        stage = PipelineStage(
            nn.Sequential(*self._stage_modules[self.stage_index]), self.stage_index, self.stages, self.root_device, group=self._pp_group
        )
        kind = ScheduleGPipe if self.schedule_name == "gpipe" else Schedule1F1B
        # Losses come back averaged per micro-batch; the loss function divides by their number
        # (and by gradient accumulation) itself, so gradients already accumulated stay as they are.
        self._schedule = kind(stage, self.microbatches, loss_fn=self._microbatch_loss, scale_grads=False)

    # -- the training step -----------------------------------------------------------------------
    def training_step(self, batch, batch_idx, *args, **kwargs):
        module = self.lightning_module
        batch_size = _batch_size(batch)
        if self._schedule is None:
            self._build_schedule(batch_size)
        self._current = {"batch": batch, "batch_idx": batch_idx}
        losses: list[torch.Tensor] = []
        first, last = self.stage_index == 0, self.stage_index == self.stages - 1
        params = self._stage_params()
        # Lightning zeroes gradients between training_step and backward: the schedule's gradients
        # are set aside here and added in backward(), leaving any accumulated ones as they were.
        earlier = [p.grad for p in params]
        for p in params:
            p.grad = None
        with self.precision_plugin.train_step_context():
            inputs = self._net_inputs(batch, batch_idx) if first else ()
            target = torch.arange(batch_size, device=self.root_device) if last else None
            self._schedule.step(*inputs, target=target, losses=losses)
        self._new_grads = [p.grad for p in params]
        for p, grad in zip(params, earlier):
            p.grad = grad
        self._reduce_over_replicas(self._new_grads)
        if last:  # the mean over micro-batches: their losses, each divided as the loss function did
            loss = torch.stack([part.detach() for part in losses]).sum() * self._loss_divisor() / self.microbatches
        else:
            loss = torch.zeros((), device=self.root_device)
        dist.broadcast(loss, src=self._pp_ranks[-1], group=self._pp_group)
        module.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def backward(self, closure_loss, optimizer, *args, **kwargs):
        """The schedule ran backward inside training_step; its gradients are added now."""
        for p, grad in zip(self._stage_params(), self._new_grads):
            if grad is not None:
                p.grad = grad if p.grad is None else p.grad + grad
        self._new_grads = []
        return closure_loss

    def _stage_params(self) -> list[nn.Parameter]:
        return [p for layer in self._stage_modules[self.stage_index] for p in layer.parameters()]

    def _net_inputs(self, batch, batch_idx) -> tuple:
        try:
            with self._task_calls(_CaptureInput()):
                self.lightning_module.training_step(batch, batch_idx)
        except _Captured as captured:
            if captured.kwargs or len(captured.args) != 1:
                extra = sorted(captured.kwargs) or f"{len(captured.args)} positional inputs"
                raise ConfigError("trainer", f"trainer=pipeline feeds a net one input; this task passes {extra}; use another strategy for this model") from None
            return captured.args
        raise RuntimeError("the task's training_step never called its net")

    def _microbatch_loss(self, output, indices):
        """The task's loss on one micro-batch: its training_step with `output` as the net's.

        At the first step torch also calls it once on placeholder outputs, to infer gradient
        shapes; that loss is never used.
        """
        step = self._current
        micro = _index_batch(step["batch"], indices)
        with self._task_calls(_GivenOutput(output)):
            result = self.lightning_module.training_step(micro, step["batch_idx"])
        loss = result["loss"] if isinstance(result, dict) else result
        return loss / self._loss_divisor()

    def _loss_divisor(self) -> int:
        return self.microbatches * self.lightning_module.trainer.accumulate_grad_batches

    @contextmanager
    def _task_calls(self, stand_in: nn.Module):
        """Within: the task's net is `stand_in` and its logging is off (the strategy logs the loss
        of the whole batch; per-micro-batch values would be partial)."""
        module = self.lightning_module
        slot = self._net_slot(module)
        net = getattr(module, slot)
        module._modules[slot] = stand_in
        module.log = lambda *a, **k: None
        try:
            yield
        finally:
            module._modules[slot] = net
            del module.log

    def _reduce_over_replicas(self, grads: list[torch.Tensor | None]) -> None:
        replicas = dist.get_world_size(self._dp_group)
        for grad in grads:
            if grad is not None and replicas > 1:
                dist.all_reduce(grad, group=self._dp_group)
                grad /= replicas

    # -- the whole net, where it is used whole ------------------------------------------------
    @torch.no_grad()
    def sync_stages(self) -> None:
        """Every rank's copy of every stage := the stage owner's (within each pipeline)."""
        if self._pp_group is None:
            return
        for index, layers in enumerate(self._stage_modules):
            for layer in layers:
                for tensor in [*layer.parameters(), *layer.buffers()]:
                    dist.broadcast(tensor.data, src=self._pp_ranks[index], group=self._pp_group)

    def on_validation_start(self) -> None:
        self.sync_stages()

    def on_test_start(self) -> None:
        self.sync_stages()

    def on_predict_start(self) -> None:
        self.sync_stages()

    def on_train_end(self) -> None:
        self.sync_stages()

    def lightning_module_state_dict(self) -> dict[str, Any]:
        self.sync_stages()
        return super().lightning_module_state_dict()

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        """One optimizer state for the whole net: each stage's entries come from its owner."""
        state = super().optimizer_state(optimizer)
        if self._pp_group is None or self.stages == 1:
            return state
        gathered = [None] * self.stages
        dist.all_gather_object(gathered, state["state"], group=self._pp_group)
        merged = {}
        for part in gathered:
            merged.update(part)
        return {**state, "state": merged}


def _batch_size(batch) -> int:
    from lightning.fabric.utilities.apply_func import apply_to_collection

    sizes = []
    apply_to_collection(batch, torch.Tensor, lambda t: sizes.append(t.shape[0]))
    if not sizes:
        raise RuntimeError("trainer=pipeline needs batches holding tensors")
    return sizes[0]


def _index_batch(batch, indices: torch.Tensor):
    from lightning.fabric.utilities.apply_func import apply_to_collection

    return apply_to_collection(batch, torch.Tensor, lambda t: t[indices.to(t.device)])
