"""Strategy factories for the sharded trainers: Lightning's FSDP and DeepSpeed strategies on GPUs,
and the smallest subclasses that let the same strategies run on the CPU with gloo (tests, laptops)."""

import argparse

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.strategies.ddp import DDPStrategy
from lightning.fabric.utilities.seed import reset_seed

from dtrain.extras import require
from dtrain.parallel.deepspeed_config import offloads_optimizer, persistent_extensions_dir, to_cpu_adam
from dtrain.parallel.restore_order import LoaderAfterRestore


def _on_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


class DeepSpeed(LoaderAfterRestore, DeepSpeedStrategy):
    """Lightning's DeepSpeed strategy, swapping a torch Adam/AdamW for DeepSpeed's CPU Adam when the
    optimizer is offloaded (DeepSpeed refuses any other optimizer there), and resuming mid-epoch
    from the checkpoint's position (LoaderAfterRestore).

    The stages after fit (test) keep fit's engine instead of building an inference engine on the
    module it already partitioned: that engine tests the weights as training left them, and under
    ZeRO-3 it is the one that can load a best checkpoint, whose weights live in the optimizer's
    partitions (an inference engine has no ZeRO-3 optimizer to read them into).
    """

    _fit_engine = None

    def _initialize_deepspeed_train(self, model) -> None:
        super()._initialize_deepspeed_train(model)
        self._fit_engine = self.model

    def _initialize_deepspeed_inference(self, model) -> None:
        engine = self._fit_engine
        if engine is not None and engine.module is model:
            self.model = engine
            return
        self._new_inference_engine(model)

    def _new_inference_engine(self, model) -> None:
        super()._initialize_deepspeed_inference(model)

    def load_checkpoint(self, checkpoint_path, weights_only=None):
        from lightning.pytorch.trainer.states import TrainerFn

        evaluating = self.lightning_module.trainer.state.fn != TrainerFn.FITTING
        if not (evaluating and self.zero_stage_3 and self.model is self._fit_engine and not self.load_full_weights):
            return super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        # ZeRO-3 weights are read from the optimizer's partitions; the optimizer state comes
        # along and is not used by evaluation.
        _, client_state = self.deepspeed_engine.load_checkpoint(
            self.broadcast(checkpoint_path), load_optimizer_states=True, load_lr_scheduler_states=False,
            load_module_strict=self.lightning_module.strict_loading,
        )
        if client_state is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint {checkpoint_path}")
        return client_state

    def _init_optimizers(self):
        optimizer, scheduler = super()._init_optimizers()
        if offloads_optimizer(self.config):
            optimizer = to_cpu_adam(optimizer)
            if scheduler is not None:
                scheduler.scheduler.optimizer = optimizer
        return optimizer, scheduler


class CPUDeepSpeed(DeepSpeed):
    """DeepSpeed on the CPU: Lightning checks for CUDA and device indices that CPUs lack; DeepSpeed
    itself picks its CPU accelerator and gloo."""

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # skips DeepSpeedStrategy's CUDA-only check

    def setup_distributed(self) -> None:
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank),  # a CPU device has no index
            config=self.config,
            model=model,
            model_parameters=filter(lambda p: p.requires_grad, model.parameters()),
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer

    def _new_inference_engine(self, model) -> None:
        import deepspeed
        from lightning.pytorch.strategies.deepspeed import remove_module_hooks

        config = {"train_micro_batch_size_per_gpu": 1} | {k: self.config[k] for k in ("fp16", "bf16") if k in self.config}
        if self.zero_stage_3:
            config |= {k: self.config[k] for k in ("zero_allow_untested_optimizer", "zero_optimization")}
        remove_module_hooks(model)
        self.model, _, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank), config=config, model=model,
            optimizer=None, lr_scheduler=None, model_parameters=[], dist_init_required=False,
        )


class FSDP(LoaderAfterRestore, FSDPStrategy):
    """Lightning's FSDP strategy, keeping the FSDP wrapper that fit built for the stages after it,
    and resuming mid-epoch from the checkpoint's position (LoaderAfterRestore).

    Lightning hands each stage (fit, then test) the bare LightningModule and wraps it again; but
    after fit its parameters are views of FSDP's flat shards, so a second wrapper (or a full
    checkpoint loaded into the bare module) sees 1-D shards where 2-D weights should be. Reusing
    fit's wrapper tests the weights as FSDP left them, or loads a best checkpoint into them.
    """

    _fit_wrapper = None

    def _kept_wrapper(self, model):
        kept = self._fit_wrapper
        return kept if kept is not None and kept.module is model else None

    def _setup_model(self, model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        kept = self._kept_wrapper(model)
        if kept is not None:
            return kept
        model = super()._setup_model(model)
        if isinstance(model, FullyShardedDataParallel):
            self._fit_wrapper = model
        return model


class CPUFSDP(FSDP):
    """FSDP on the CPU: Lightning passes the device's index (None on the CPU); FSDP wants the device."""

    def _setup_model(self, model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        if self._kept_wrapper(model) is None and not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            model = FullyShardedDataParallel(
                module=model, cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"), **self.kwargs,
            )
            self.kwargs.pop("auto_wrap_policy", None)  # applied just now
        return super()._setup_model(model)


def deepspeed(accelerator: str = "auto", stage: int = 2, **kwargs) -> DeepSpeedStrategy:
    """`trainer.strategy` for the deepspeed_* trainers; `kwargs` are DeepSpeedStrategy's."""
    require("deepspeed", "deepspeed", f"trainer=deepspeed_zero{stage}" + ("_offload" if kwargs.get("offload_optimizer") else ""))
    persistent_extensions_dir()
    if not _on_gpu(accelerator):
        return CPUDeepSpeed(stage=stage, **kwargs)
    return DeepSpeed(stage=stage, **kwargs)


def fsdp(accelerator: str = "auto", auto_wrap_min_params: int | None = None, **kwargs) -> FSDPStrategy:
    """`trainer.strategy` for trainer=fsdp; submodules of at least `auto_wrap_min_params`
    parameters become their own FSDP units (gathered one at a time), the rest share the root's."""
    if auto_wrap_min_params:
        from functools import partial

        from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

        kwargs["auto_wrap_policy"] = partial(size_based_auto_wrap_policy, min_num_params=int(auto_wrap_min_params))
    return (FSDP if _on_gpu(accelerator) else CPUFSDP)(**kwargs)
