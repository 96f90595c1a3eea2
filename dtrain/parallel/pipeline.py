"""Pipeline parallelism: the net split into consecutive stages, one per rank, micro-batches
flowing through them on a GPipe or 1F1B schedule (torch.distributed.pipelining).

Lightning has no pipeline strategy, so this is dtrain's. It assumes nothing of the task and only
one thing of the net: `pipeline_layers()`, its ordered layers (dtrain.nets.transformer has it).

Each rank holds only its stage. The net is built whole (by Hydra, before any strategy sees it);
at set-up every rank replaces the layers of the other stages with empty placeholders, so the
parameters, buffers, gradients and optimizer state it keeps are its stage's. Parameter names stay
those of the whole net (`net.blocks.3...`), which is what lets checkpoints cross strategies.

Training: the schedule runs forward, loss and backward of all micro-batches itself, so the
strategy owns the training step. The task's own `training_step` supplies the rest:

- the first stage's input is whatever the task passes to its net (found by running the task's
  step up to that call: see `_net_inputs`);
- the loss of a micro-batch is the task's step run on that micro-batch with the net's output
  put in place of the net.

Validation, test and prediction run the task's own steps, logging and metrics included, on every
rank, with the net replaced by the stages in turn: the first stage runs the input through its
layers and sends the activation on, the last stage's output is broadcast to the whole pipeline, so
every rank returns the real output to the task and logs the same values.

Gradient clipping by norm uses the norm over all stages (each stage's sum of squares all-reduced
over the pipeline), equal to one process's. Checkpoints are whole files, a one-process run's
(dtrain.parallel.pipeline_checkpoint). How the layers are cut: dtrain.parallel.pipeline_stages;
activations outside a schedule: dtrain.parallel.stage_transfer.

Pipelines can be replicated: with world = data_parallel x stages, replicas all-reduce their
stage's gradients.
"""

from contextlib import contextmanager
from itertools import chain

import torch
import torch.distributed as dist
from lightning.fabric.utilities.apply_func import apply_to_collection
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from dtrain.config.errors import ConfigError
from dtrain.parallel.pipeline_checkpoint import WholeCheckpoints
from dtrain.parallel.pipeline_stages import ElsewhereLayer, split_layers
from dtrain.parallel.stage_transfer import broadcast_from, receive, send

SCHEDULES = ("gpipe", "1f1b")


class _Captured(BaseException):
    """Carries the net's input out of the task's step. A BaseException, so that a task's own
    `except Exception` around its net call cannot swallow it."""

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


class _StagesInTurn(nn.Module):
    """Stands in for the net in validation, test and prediction: the input through every stage
    of the pipeline, the output on every rank."""

    def __init__(self, strategy: "Pipeline"):
        super().__init__()
        self.strategy = strategy  # a plain attribute: not a module of the task

    def forward(self, *args, **kwargs):
        return self.strategy.forward_through_stages(*args, **kwargs)


class Pipeline(WholeCheckpoints, DDPStrategy):
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
        self._layers: list[nn.Module] = []  # this rank's stage; the others' are gone
        self._slot: str | None = None  # the task's attribute holding the net
        self._pp_group = self._dp_group = None
        self._new_grads: list[torch.Tensor | None] = []
        # Names only (no tensors) of the whole net, to write and read whole checkpoints:
        self._stage_keys: list[set[str]] = []  # state-dict keys of each stage's layers
        self._full_keys: list[str] = []  # the whole module's state-dict keys, in order
        self._full_params: list[str] = []  # the whole module's parameter names, in order
        self._layouts: list[list[list[str]]] = []  # per optimizer, per group: its parameters' names

    @property
    def parallel_dims(self):
        """world = replicas x stages (dtrain.parallel.dims)."""
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
        self.parallel_dims  # raises, naming trainer.strategy.stages, if the stages do not divide the processes
        self.accelerator.setup(trainer)
        fitting = trainer.state.fn == TrainerFn.FITTING
        if self._pp_group is None:
            self._make_groups()
            if fitting:
                # Built over the whole net, so that its parameter groups are a single process's;
                # the other stages' parameters leave it with their layers.
                self.setup_optimizers(trainer)
                self._layouts = [self._names_by_group(optimizer) for optimizer in self.optimizers]
            self._keep_own_stage(self.lightning_module)
        elif fitting:  # fitting after a validate/test on the same Trainer: the net is split already
            self.setup_optimizers(trainer)
            self._layouts = self._gathered_layouts()
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        self.setup_precision_plugin()
        if fitting:
            from lightning.fabric.utilities.optimizer import _optimizers_to_device

            _optimizers_to_device(self.optimizers, self.root_device)

    def setup_precision_plugin(self) -> None:
        super().setup_precision_plugin()
        # Lightning clips through the precision plugin (after unscaling, for 16-bit mixed
        # precision); by norm, the norm must be the whole net's, not this stage's.
        self.precision_plugin.clip_grad_by_norm = self._clip_grad_by_norm

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

    def _keep_own_stage(self, module: nn.Module) -> None:
        """Replace every layer of the other stages with an ElsewhereLayer (at every path it is
        registered under), after noting the names a whole checkpoint needs. Whatever the module
        holds outside the net's layers stays on every rank."""
        self._slot = self._net_slot(module)
        stages = split_layers(getattr(module, self._slot), self.stages)
        paths: dict[int, list[str]] = {}
        for name, child in module.named_modules(remove_duplicate=False):
            paths.setdefault(id(child), []).append(name)
        owner: dict[int, int] = {}
        for index, layers in enumerate(stages):
            for p in chain.from_iterable(layer.parameters() for layer in layers):
                if owner.setdefault(id(p), index) != index:
                    raise ConfigError("trainer", "trainer=pipeline cannot split a net whose stages share a parameter (tied embeddings?); untie it or use another strategy")
        self._full_keys = list(module.state_dict().keys())
        self._full_params = [name for name, _ in module.named_parameters()]
        self._stage_keys = [{f"{paths[id(layer)][0]}.{key}" for layer in layers for key in layer.state_dict()} for layers in stages]
        for index, layers in enumerate(stages):
            if index == self.stage_index:
                continue
            for layer in layers:
                for path in paths[id(layer)]:
                    parent, _, child = path.rpartition(".")
                    module.get_submodule(parent)._modules[child] = ElsewhereLayer(index)
        self._layers = stages[self.stage_index]
        kept = {id(p) for p in module.parameters()}
        for optimizer in self.optimizers:  # every group stays (empty or not): its index is the whole net's
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) in kept]
            for p in [p for p in optimizer.state if id(p) not in kept]:
                del optimizer.state[p]

    def _param_names(self) -> dict[int, str]:
        return {id(p): name for name, p in self.lightning_module.named_parameters()}

    def _names_by_group(self, optimizer) -> list[list[str]]:
        names = self._param_names()
        return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]

    def _gathered_layouts(self) -> list[list[list[str]]]:
        """The whole net's optimizer layout from the stages' optimizers (group by group, in the
        whole net's parameter order); only possible when every stage has the same groups."""
        parts = [None] * self.stages
        dist.all_gather_object(parts, [self._names_by_group(o) for o in self.optimizers], group=self._pp_group)
        order = {name: i for i, name in enumerate(self._full_params)}
        layouts = []
        for per_stage in zip(*parts):
            if len({len(groups) for groups in per_stage}) != 1:
                raise ConfigError("trainer", "the pipeline stages' optimizers have different parameter groups; fit before validating or testing with this Trainer")
            layouts.append([sorted(chain(*groups), key=order.__getitem__) for groups in zip(*per_stage)])
        return layouts

    def _build_schedule(self, example_batch_size: int) -> None:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        if example_batch_size % self.microbatches:
            raise ConfigError("trainer.strategy.microbatches", f"the per-replica batch {example_batch_size} does not split into {self.microbatches} micro-batches; use a divisor of it")
        stage = PipelineStage(nn.Sequential(*self._layers), self.stage_index, self.stages, self.root_device, group=self._pp_group)
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
            self._schedule.step(*inputs, target=target, losses=losses, return_outputs=False)
        self._current = None
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
        return [p for layer in self._layers for p in layer.parameters()]

    def _net_inputs(self, batch, batch_idx) -> tuple:
        """What the task passes to its net for this batch: its training_step run up to that call.

        The schedule needs the first stage's input before it runs, and the first stage never has
        the net's output that the rest of the step would need; so the step stops at the call."""
        try:
            with self._net_replaced_by(_CaptureInput()), self._logging_off():
                self.lightning_module.training_step(batch, batch_idx)
        except _Captured as captured:
            _check_one_input(captured.args, captured.kwargs)
            return captured.args
        raise RuntimeError("the task's training_step never called its net")

    def _microbatch_loss(self, output, indices):
        """The task's loss on one micro-batch: its training_step with `output` as the net's.

        At the first step torch also calls it once on placeholder outputs, to infer gradient
        shapes; that loss is never used.
        """
        step = self._current
        micro = _index_batch(step["batch"], indices)
        with self._net_replaced_by(_GivenOutput(output)), self._logging_off():
            result = self.lightning_module.training_step(micro, step["batch_idx"])
        loss = result["loss"] if isinstance(result, dict) else result
        return loss / self._loss_divisor()

    def _loss_divisor(self) -> int:
        return self.microbatches * self.lightning_module.trainer.accumulate_grad_batches

    @contextmanager
    def _net_replaced_by(self, stand_in: nn.Module):
        """Within: the task's net is `stand_in`."""
        module = self.lightning_module
        slot = self._slot or self._net_slot(module)
        net = module._modules[slot]
        module._modules[slot] = stand_in
        try:
            yield
        finally:
            module._modules[slot] = net

    @contextmanager
    def _logging_off(self):
        """The strategy logs the loss of the whole batch; per-micro-batch values would be partial."""
        module = self.lightning_module
        module.log = lambda *a, **k: None
        try:
            yield
        finally:
            del module.log

    def _reduce_over_replicas(self, grads: list[torch.Tensor | None]) -> None:
        replicas = dist.get_world_size(self._dp_group)
        for grad in grads:
            if grad is not None and replicas > 1:
                dist.all_reduce(grad, group=self._dp_group)
                grad /= replicas

    @torch.no_grad()
    def _clip_grad_by_norm(self, optimizer, clip_val: float, norm_type: float = 2.0) -> None:
        """clip_grad_norm_ with the norm of the whole net: each stage's p-th power of its norm
        summed over the pipeline (replicas hold equal, already reduced gradients)."""
        params = [p for p in self.precision_plugin.main_params(optimizer) if p.grad is not None]
        grads = [p.grad for p in params]
        local = torch.nn.utils.get_total_norm(grads, norm_type) if grads else torch.zeros((), device=self.root_device)
        local = local.to(self.root_device, torch.promote_types(local.dtype, torch.float32))  # no 16-bit sums
        if norm_type == float("inf"):
            dist.all_reduce(local, op=dist.ReduceOp.MAX, group=self._pp_group)
            total = local
        else:
            power = local**norm_type
            dist.all_reduce(power, group=self._pp_group)
            total = power ** (1.0 / norm_type)
        if params:
            torch.nn.utils.clip_grads_with_norm_(params, clip_val, total)

    # -- evaluation: the task's own steps, the stages in turn as its net ---------------------
    def validation_step(self, *args, **kwargs):
        with self.precision_plugin.val_step_context(), self._net_replaced_by(_StagesInTurn(self)):
            return self.lightning_module.validation_step(*args, **kwargs)

    def test_step(self, *args, **kwargs):
        with self.precision_plugin.test_step_context(), self._net_replaced_by(_StagesInTurn(self)):
            return self.lightning_module.test_step(*args, **kwargs)

    def predict_step(self, *args, **kwargs):
        with self.precision_plugin.predict_step_context(), self._net_replaced_by(_StagesInTurn(self)):
            return self.lightning_module.predict_step(*args, **kwargs)

    def forward_through_stages(self, *args, **kwargs) -> torch.Tensor:
        """The net's output for its input, on every rank of the pipeline: the first stage runs its
        layers and sends the activation on, each stage in turn, and the last broadcasts the output
        (every rank's task then computes the same metrics). Called on every rank with the same
        input; the first stage's is the one used."""
        _check_one_input(args, kwargs)
        index = self.stage_index
        x = args[0] if index == 0 else receive(self._pp_ranks[index - 1], self._pp_group, self.root_device)
        for layer in self._layers:
            x = layer(x)
        if index < self.stages - 1:
            send(x, self._pp_ranks[index + 1], self._pp_group)
            x = None
        return broadcast_from(x, self._pp_ranks[-1], self._pp_group, self.root_device)


def _check_one_input(args: tuple, kwargs: dict) -> None:
    if kwargs or len(args) != 1:
        extra = sorted(kwargs) or f"{len(args)} positional inputs"
        raise ConfigError("trainer", f"trainer=pipeline feeds a net one input; this task passes {extra}; use another strategy for this model")


def _batch_size(batch) -> int:
    sizes = []
    apply_to_collection(batch, torch.Tensor, lambda t: sizes.append(t.shape[0]))
    if not sizes:
        raise RuntimeError("trainer=pipeline needs batches holding tensors")
    return sizes[0]


def _index_batch(batch, indices: torch.Tensor):
    return apply_to_collection(batch, torch.Tensor, lambda t: t[indices.to(t.device)])
