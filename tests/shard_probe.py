"""A test instrument for sharded strategies: what each rank really holds, and the full weights."""

import json
from contextlib import nullcontext
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import FSDPStrategy


def _clean(name: str) -> str:
    return name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")


def _numel(tensors) -> int:
    return int(sum(t.numel() for t in tensors))


class ShardProbe(Callback):
    """At the end of fit writes <run>/shards/rank<r>.json: this rank's parameter elements, the
    full model's, its optimizer-state elements, the optimizer's class and the ZeRO settings; and
    rank<r>.pt: the full parameters (gathered where sharded) as this rank sees them."""

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.world_size == 1:  # the reference run also records where training started
            out = Path(trainer.default_root_dir) / "shards"
            out.mkdir(parents=True, exist_ok=True)
            torch.save({name: p.detach().cpu().clone().float() for name, p in pl_module.named_parameters()}, out / "initial.pt")

    def on_train_end(self, trainer, pl_module) -> None:
        strategy = trainer.strategy
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "strategy": type(strategy).__name__}
        params = [p for _, p in pl_module.named_parameters()]
        gather = nullcontext()
        engine = getattr(strategy, "deepspeed_engine", None) if hasattr(strategy, "zero_stage_3") else None
        if engine is not None:
            import deepspeed

            stage = engine.zero_optimization_stage()
            optimizer = engine.optimizer
            base = getattr(optimizer, "optimizer", optimizer)
            record.update(
                zero_stage=stage, offload_optimizer=bool(engine.zero_offload_optimizer()),
                offload_param=bool(engine.zero_offload_param()), optimizer=type(base).__name__,
            )
            if stage == 3:
                record["local_param_numel"] = _numel(p.ds_tensor for p in params)
                record["full_param_numel"] = int(sum(p.ds_numel for p in params))
                record["param_devices"] = sorted({str(p.ds_tensor.device) for p in params})
                gather = deepspeed.zero.GatheredParameters(params, modifier_rank=None)
            else:
                record["local_param_numel"] = record["full_param_numel"] = _numel(params)
            record["optimizer_state_numel"] = _numel(s["exp_avg"] for s in base.state.values() if "exp_avg" in s)
        elif isinstance(strategy, FSDPStrategy):  # Lightning's, or dtrain's FSDP / CPUFSDP
            from torch.distributed.fsdp import FullyShardedDataParallel

            record["local_param_numel"] = _numel(params)  # with use_orig_params each is a view of the local shard
            optimizer = trainer.optimizers[0]
            record["optimizer"] = type(optimizer).__name__
            record["optimizer_state_numel"] = _numel(s["exp_avg"] for s in optimizer.state.values() if "exp_avg" in s)
            gather = FullyShardedDataParallel.summon_full_params(strategy.model, writeback=False)
        else:
            record["local_param_numel"] = _numel(params)
            optimizer = trainer.optimizers[0]
            record["optimizer"] = type(optimizer).__name__
            record["optimizer_state_numel"] = _numel(s["exp_avg"] for s in optimizer.state.values() if "exp_avg" in s)
        with gather:
            full = {_clean(name): p.detach().cpu().clone().float() for name, p in pl_module.named_parameters()}
        record.setdefault("full_param_numel", _numel(full.values()))
        out = Path(trainer.default_root_dir) / "shards"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        torch.save(full, out / f"rank{trainer.global_rank}.pt")
