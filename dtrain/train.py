"""One run, top to bottom: validate, seed, data, model, callbacks, loggers, trainer, fit, test."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from dtrain.config.errors import ConfigError
from dtrain.config.secrets import redacted
from dtrain.config.user_targets import leave_out_foreign_keys
from dtrain.config.validate import check_devices, validate
from dtrain.console.logs import start_logging
from dtrain.failures import as_config_error, known_failures
from dtrain.launch.cuda_probe import skip_nvml_where_absent
from dtrain.launch.local import local_ranks
from dtrain.launch.threads import settle_threads
from dtrain.parallel.dims import ParallelDims
from dtrain.run_dir import fix_run_dir, save_config, write_env_record

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and test the run `cfg` describes; return its test metrics (and data baselines).

    The same function serves the command line, every extra rank, Slurm jobs, Ray Tune trials
    and tests. `cfg.paths.run_dir` must be a concrete path when called outside Hydra.
    """
    validate(cfg)  # user mistakes, reported before torch is even imported
    left_out = leave_out_foreign_keys(cfg)  # dtrain's default keys beside a user's own _target_
    processes = check_devices(cfg.trainer)
    dims = ParallelDims.from_config(cfg.trainer, processes)  # replicas, shards, tensor, pipeline: one line if they do not fit
    run_dir = fix_run_dir(cfg)
    settle_threads(cfg, processes, run_dir)  # runtime.threads, decided before torch loads and saved with the config
    start_logging(run_dir)  # each message once, rank 0 only; <run>/run.log keeps all

    import lightning as L
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    skip_nvml_where_absent()  # set by Lightning's import; on a CPU machine it costs every optimizer step

    from dtrain.callbacks.dead_peer import ReportDeadPeer
    from dtrain.callbacks.frozen_heap import FrozenHeap
    from dtrain.callbacks.plain_hyperparameters import PlainHyperparameters
    from dtrain.callbacks.process_group import ProcessGroupClosedAtExit
    from dtrain.checkpoints import TRUST_KEY, newest_valid_checkpoint, safe_or_none, trusting
    from dtrain.data.foreign import data_baselines, data_shapes, foreign_data_warning, is_dtrain_datamodule, use_distributed_sampler
    from dtrain.callbacks.nonfinite import raise_if_stopped
    from dtrain.callbacks.sanity_check import SanityCheckFailure
    from dtrain.launch.requeue import requeued_checkpoint, stop_on_signal, trainer_plugins
    from dtrain.parallel.collective_timeout import collective_timeout, strategy_with_timeout
    from dtrain.parallel.parallelize import ParallelOptions, Parallelize
    from dtrain.parallel.tensor_parallel import check_declared_counts

    check_declared_counts(OmegaConf.select(cfg, "model.net"), dims.tensor)  # heads that do not split: before any rank starts

    # Checkpoint files that would run code are skipped or refused unless the command line says to trust them.
    trust = OmegaConf.select(cfg, TRUST_KEY, default=False) is True
    with trusting(trust):
        ckpt_path = requeued_checkpoint(run_dir)  # a requeued Slurm job continues where it stopped
        if cfg.get("resume"):
            ckpt_path = newest_valid_checkpoint(run_dir)
            if ckpt_path is None:
                raise ConfigError("resume", f"{run_dir} holds no valid checkpoint to resume from; start a new run instead")
    if rank_zero_only.rank == 0:
        save_config(cfg, run_dir)

    with trusting(trust), local_ranks(cfg.trainer, processes, run_dir), known_failures(run_dir):  # out of memory, ...: one line
        L.seed_everything(cfg.seed, workers=True, verbose=False)

        datamodule = instantiate(cfg.data)
        with open_dict(cfg):
            cfg.shapes = data_shapes(datamodule)  # lets the net config say ${shapes.num_classes}
        left_out += leave_out_foreign_keys(cfg, cfg.shapes)
        warning = foreign_data_warning(cfg, datamodule, left_out)  # a plain-Lightning datamodule
        if warning and rank_zero_only.rank == 0:
            log.warning(warning)
        with net_must_fit_data(cfg):
            model = instantiate(cfg.model)
        parallelize = Parallelize(dims, ParallelOptions.from_config(cfg))
        parallelize.check(model)  # a net's widths must split over the tensor size

        callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
        callbacks.append(parallelize)  # tensor parallel, activation checkpointing, compile, FSDP2: at set-up
        callbacks.append(ReportDeadPeer())  # under torchrun or srun: a dead rank named at once, before the launcher's SIGTERM
        callbacks.append(stop_on_signal())  # SIGTERM, Ctrl-C, Slurm's notice: checkpoint the step, exit (or requeue)
        callbacks.append(SanityCheckFailure())  # net_must_fit_data asks it where a failure came from
        callbacks.append(PlainHyperparameters(cfg))  # checkpoints that load weights-only, whatever the module stores
        callbacks.append(ProcessGroupClosedAtExit())  # no abort at exit of a spawned worker
        callbacks.append(FrozenHeap())  # the garbage collector skips the objects a run starts with while it trains
        loggers = [instantiate(lg) for lg in cfg.get("logger", {}).values() if lg is not None]
        strategy = strategy_with_timeout(cfg.trainer.get("strategy", "auto"), collective_timeout(cfg))  # a hung rank ends the run
        trainer = instantiate(
            cfg.trainer, strategy=strategy, callbacks=callbacks, logger=loggers,
            use_distributed_sampler=use_distributed_sampler(cfg.trainer, datamodule), **trainer_plugins(cfg.trainer),
        )
        if is_dtrain_datamodule(datamodule):  # another datamodule's batch size is per device
            check_batch_split(cfg, trainer)
        hyperparams = redacted(OmegaConf.to_container(cfg, resolve=True))  # no secret's value reaches a logger
        for logger in trainer.loggers:
            logger.log_hyperparams(hyperparams)
        if trainer.is_global_zero:
            write_env_record(run_dir, trainer)

        status = "failed"
        try:
            with net_must_fit_data(cfg, trainer):  # Lightning's sanity check runs the first batch
                trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not trust)
            raise_if_stopped(trainer)  # a NaN loss stopped fit: one line, no test of poisoned weights

            metrics = {}
            if cfg.get("test", True):
                best = getattr(trainer.checkpoint_callback, "best_model_path", "")  # none without a ModelCheckpoint (a sweep's TuneReport keeps no best)
                best = safe_or_none(best) if best else None  # a resumed run's best may be a file it did not write
                (metrics,) = trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=not trust)
            metrics = {key: float(value) for key, value in metrics.items()}
            metrics.update({f"baseline/{key}": value for key, value in data_baselines(datamodule).items()})
            status = "success"
        finally:  # a failed run must not leave its W&B run open for the next run in this process
            finish_loggers(trainer.loggers, status)

    if rank_zero_only.rank == 0:
        from dtrain.console.end import say_end

        say_end(metrics, run_dir, trainer.loggers)  # the test metrics table and the run directory
    return metrics


@contextmanager
def net_must_fit_data(cfg: DictConfig, trainer=None) -> Iterator[None]:
    """Turn a net that cannot take the data (a shape the data lacks, or a failure on the
    sanity-check batch, before any training) into a one-line error naming both."""
    from omegaconf.errors import InterpolationKeyError

    try:
        yield
    except InterpolationKeyError as error:
        has = f"has only {', '.join(cfg.shapes)}" if cfg.shapes else "gives no shapes (no `shapes` property)"
        raise ConfigError(
            "model.net", f"{str(error).splitlines()[0]}: data={cfg.data._target_} {has}; "
            "pick a net that fits this data, or give the size yourself"
        ) from None
    except Exception as error:
        from dtrain.callbacks.sanity_check import failed_in_sanity_check

        if trainer is None or not failed_in_sanity_check(trainer) or isinstance(error, ConfigError) or as_config_error(error):
            raise  # not the net's fault, or a failure known_failures names better
        if OmegaConf.select(cfg, "model.net._target_") is None:  # a user's module without a net: their traceback
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            "model.net", f"{cfg.model.net._target_} fails on the first batch of {cfg.data._target_} "
            f"(data shapes {dict(cfg.shapes)}): {message}"
        ) from None


def check_batch_split(cfg: DictConfig, trainer) -> None:
    """The global batch must split evenly over data-parallel ranks and accumulation steps."""
    from dtrain.data.base import per_device_batch
    from dtrain.parallel.dims import dims_of

    per_device_batch(cfg.data.batch_size, dims_of(trainer).data_parallel, trainer.accumulate_grad_batches)


def finish_loggers(loggers, status: str) -> None:
    """Close the loggers so their files are complete when run() returns; a W&B run left open
    would also be taken over by the next run in this process."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        logger.finalize(status)
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if status == "success" else 1)
