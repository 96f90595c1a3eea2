"""The training loader built again after a checkpoint is restored, for the strategies Lightning
restores only after their set-up (FSDP, DeepSpeed, ModelParallel)."""

from lightning.pytorch.trainer.states import TrainerFn


class LoaderAfterRestore:
    """Mixin for a Lightning strategy whose `restore_checkpoint_after_setup` is true.

    Their set-up creates the optimizers, and a schedule sized by `trainer.estimated_stepping_batches`
    (dtrain's warm-up cosine, or a user's) makes Lightning build the training loader right then:
    before the checkpoint, and with it the datamodule's position inside the epoch, is restored.
    That loader would start the epoch from its first batch. Dropping it once the checkpoint is
    loaded makes the fit loop build it again from the restored position, as under DDP, where the
    checkpoint is restored before set-up.
    """

    def load_checkpoint(self, checkpoint_path, weights_only=None):
        checkpoint = super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        trainer = self.lightning_module.trainer
        if trainer.state.fn == TrainerFn.FITTING:
            trainer.fit_loop._combined_loader = None  # Lightning keeps a built loader; this one is stale
        return checkpoint
