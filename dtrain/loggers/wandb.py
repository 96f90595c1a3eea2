"""Lightning's WandbLogger, minus its console noise (dtrain's start block and end say where the
W&B run is and how to sync it, so W&B's own notes go to the log instead), taking the API key as
`logger.wandb.api_key='${oc.env:NAME}'` and keeping every secret out of the run's W&B config."""

import logging
import sys
from collections.abc import Mapping

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only


class WandbLogger(LightningWandbLogger):
    def __init__(self, *args, api_key: str | None = None, **kwargs):
        if api_key:  # W&B's own setting: used to log in, never written (not `wandb login`, which saves it in ~/.netrc)
            settings = kwargs.pop("settings", None) or {}
            kwargs["settings"] = {**settings, "api_key": api_key} if isinstance(settings, Mapping) else settings.model_copy(update={"api_key": api_key})
        super().__init__(*args, **kwargs)
        # Lightning 2.6 always passes `anonymous=None`, which wandb 0.31 answers with "The
        # anonymous setting has no effect" on every run; leaving the key out means the same.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        self._earlier: dict[int, set[str]] | None = None

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        """A resumed run trains the steps after its checkpoint again: what the killed process
        already recorded at a step (the same values: resume is bitwise) is not recorded twice."""
        if step is not None:
            done = self._recorded_before().get(int(step), ())
            metrics = {key: value for key, value in metrics.items() if self._logged_name(key) not in done}
            if not metrics:
                return
        super().log_metrics(metrics, step)

    def _logged_name(self, key: str) -> str:
        return f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix else key

    def _recorded_before(self) -> dict[int, set[str]]:
        if self._earlier is None:
            from pathlib import Path

            from dtrain.wandb_offline import recorded_keys

            files = getattr(self.experiment, "dir", None)  # <save_dir>/wandb/<mode>-run-<time>-<id>/files; none when disabled
            segment = Path(files).parent if files else None
            self._earlier = recorded_keys(segment.parent, self.experiment.id, leave_out=segment) if segment and segment.is_dir() else {}
        return self._earlier

    def log_hyperparams(self, params) -> None:
        """Every secret key's value, and the environment's secrets, become `<redacted>` (the
        module's own hyperparameters, which Lightning logs too, as well as dtrain's config)."""
        from lightning.fabric.utilities.logger import _convert_params

        from dtrain.config.secrets import redacted

        super().log_hyperparams(redacted(_convert_params(params)))

    @property
    def experiment(self):
        if self._experiment is None and rank_zero_only.rank == 0:
            notes_to_log()
            skip_launch_inputs_never_staged()
        return super().experiment


def notes_to_log() -> None:
    """W&B's informational lines (not its warnings or errors) become records of the
    `dtrain.wandb` logger: the run's log file keeps them, the console leaves them out."""
    import wandb

    settings = wandb.setup().settings  # W&B reads its global settings (WANDB_SILENT, ...) here
    wandb.termsetup(
        wandb.Settings(silent=settings.silent, show_info=False, show_warnings=settings.show_warnings, show_errors=settings.show_errors),
        logging.getLogger("dtrain.wandb"),
    )


LAUNCH_INPUTS = "wandb.sdk.launch.inputs.internal"


def skip_launch_inputs_never_staged() -> None:
    """`wandb.init` imports W&B Launch (about 0.9 s here, an eighth of a run's start) to apply the
    job inputs a program staged with `wandb.launch.manage_config_file` / `manage_wandb_config`.
    Those live in the module it imports, so where that module was never imported nothing can be
    staged: the run skips the import, and applies any staged inputs as W&B does."""
    from wandb.sdk.wandb_run import Run

    apply = getattr(Run, "_detect_and_apply_job_inputs", None)
    if apply is None or getattr(apply, "_dtrain_guard", False):
        return  # another W&B version, or already guarded

    def apply_if_staged(run) -> None:
        if LAUNCH_INPUTS in sys.modules:
            apply(run)

    apply_if_staged._dtrain_guard = True
    Run._detect_and_apply_job_inputs = apply_if_staged
