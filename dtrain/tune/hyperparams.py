"""After a PBT exploit the trial restores the donor's optimizer state, whose learning rate and
weight decay are the donor's: put the trial's own (mutated) values back before it trains."""

from lightning.pytorch.callbacks import Callback


class ApplyOptimizerConfig(Callback):
    """Set each optimizer's hyperparameters to the values this trial's config gives them."""

    def __init__(self, **values: float):
        self.values = values

    def on_train_start(self, trainer, pl_module) -> None:  # after Lightning restored the checkpoint
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if "lr" in self.values and hasattr(scheduler, "base_lrs"):
                # a schedule scales its base rate: keep the schedule's position, change the base
                for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                    group["lr"] = group["lr"] * self.values["lr"] / base if base else self.values["lr"]
                    group["initial_lr"] = self.values["lr"]
                scheduler.base_lrs = [self.values["lr"]] * len(scheduler.base_lrs)
        scheduled = {id(c.scheduler.optimizer) for c in trainer.lr_scheduler_configs}
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for key, value in self.values.items():
                    if key == "lr" and id(optimizer) in scheduled:
                        continue
                    if key == "weight_decay" and group.get("no_decay"):  # biases and norms (Task.parameter_groups)
                        continue
                    if key in group:
                        group[key] = value
