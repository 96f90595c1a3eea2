"""A process group left to the interpreter's exit can abort the process ("terminate called
without an active exception") after a run that succeeded. Lightning closes NCCL groups at exit
and leaves gloo's; dtrain's own launcher closes its group in `finally`, but the workers that
Lightning spawns (`trainer=ddp_spawn`) end inside Lightning: close their group at exit too."""

import atexit

from lightning.pytorch.callbacks import Callback


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ProcessGroupClosedAtExit(Callback):
    _registered = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.world_size > 1 and not ProcessGroupClosedAtExit._registered:
            atexit.register(_close_process_group)
            ProcessGroupClosedAtExit._registered = True
