"""How the world of processes is divided: data-parallel replicas and shards, tensor-parallel
shards and pipeline stages. Built once from the trainer config and the world and validated
before any process starts (no torch here: config/ calls it before torch loads); the strategies
and everything that needs a process's data-parallel rank (the data, the step seed, the
throughput figures) read the same numbers at run time.

Ranks are laid out replica by replica: the `tensor x pipeline` consecutive global ranks of one
replica hold pieces of one model and load the same batch; replicas train on different data.
"""

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from dtrain.config.errors import ConfigError

TP_KEY = "trainer.strategy.tensor_parallel_size"
DP_KEY = "trainer.strategy.data_parallel_size"
PP_KEY = "trainer.strategy.stages"
_ADAM = ("torch.optim.Adam", "torch.optim.AdamW", "deepspeed.ops.adam.DeepSpeedCPUAdam")


@dataclass(frozen=True)
class ParallelDims:
    """replicate: data-parallel ranks holding whole copies (DDP, replicated pipelines);
    shard: data-parallel ranks sharding one copy (FSDP, ZeRO, FSDP2); tensor: ranks splitting
    each layer; pipeline: ranks holding consecutive stages. Their product is the world size."""

    world: int
    replicate: int = 1
    shard: int = 1
    tensor: int = 1
    pipeline: int = 1

    def __post_init__(self):
        if self.replicate * self.shard * self.tensor * self.pipeline != self.world:
            raise ValueError(f"{self} does not multiply to its world size")

    @property
    def data_parallel(self) -> int:
        """Model replicas training on different batches."""
        return self.replicate * self.shard

    @property
    def model_parallel(self) -> int:
        """Ranks holding pieces of one replica (they load the same batch)."""
        return self.tensor * self.pipeline

    def data_parallel_rank(self, global_rank: int) -> int:
        return global_rank // self.model_parallel

    @classmethod
    def from_config(cls, trainer: DictConfig, processes_per_node: int) -> "ParallelDims":
        """The dims `trainer` asks for over `processes_per_node` x `trainer.num_nodes` processes,
        or a ConfigError naming the size to change."""
        world = processes_per_node * int(trainer.get("num_nodes", 1) or 1)
        strategy = trainer.get("strategy", "auto")
        kind = strategy_kind(trainer)
        if kind == "ModelParallel":
            return tensor_and_data_parallel(strategy.get("tensor_parallel_size", "auto"), strategy.get("data_parallel_size", "auto"), world, processes_per_node)
        if kind == "Pipeline":
            return pipelines(strategy.get("stages", 2), world)
        return cls(world=world, shard=world) if kind in ("fsdp", "deepspeed") else cls(world=world, replicate=world)


def tensor_and_data_parallel(tensor, data, world: int, processes_per_node: int) -> ParallelDims:
    """Tensor parallel x FSDP2: give one size and the other follows; "auto" tensor parallel is
    every process of a node (Lightning's default: tensor-parallel traffic stays within a node)."""
    tensor, data = _size(tensor, TP_KEY), _size(data, DP_KEY)
    if tensor == "auto":
        tensor = world // data if data != "auto" and world % data == 0 else processes_per_node
    if data == "auto":
        data = world // tensor if world % tensor == 0 else 0
    if tensor * data != world:
        raise ConfigError(TP_KEY, f"data_parallel_size={data} x tensor_parallel_size={tensor} must equal the {world} processes; give one of them (a divisor of {world})")
    return ParallelDims(world=world, shard=data, tensor=tensor)


def pipelines(stages, world: int) -> ParallelDims:
    """`world // stages` replicated pipelines of `stages` stages."""
    stages = _size(stages, PP_KEY, auto=False)
    if world % stages:
        raise ConfigError(PP_KEY, f"{stages} stages do not divide the {world} processes; use a divisor of {world}")
    return ParallelDims(world=world, replicate=world // stages, pipeline=stages)


def _size(value, key: str, auto: bool = True):
    if auto and value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, f"expected a positive number of processes{' or auto' if auto else ''}, got {value!r}")
    return value


def dims_of(trainer) -> ParallelDims:
    """A running Trainer's dims: its strategy's own (dtrain's model- and pipeline-parallel
    strategies know theirs), else every process a data-parallel rank. Data-parallel only outside
    a Trainer."""
    if trainer is None:
        return ParallelDims(world=1, replicate=1)
    dims = getattr(trainer.strategy, "parallel_dims", None)
    if dims is not None:
        return dims
    world = trainer.world_size
    sharded = any(kind in type(trainer.strategy).__name__ for kind in ("FSDP", "DeepSpeed"))
    return ParallelDims(world=world, shard=world) if sharded else ParallelDims(world=world, replicate=world)


def strategy_kind(trainer: DictConfig) -> str:
    """'deepspeed', 'fsdp' or the strategy's own name ('ddp', 'auto', 'Pipeline', ...)."""
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, str):
        return "deepspeed" if strategy.startswith("deepspeed") else "fsdp" if strategy.startswith("fsdp") else strategy
    target = str(strategy.get("_target_", ""))
    for kind in ("deepspeed", "fsdp"):
        if kind in target.lower():
            return kind
    return target.rsplit(".", 1)[-1]


def check_strategy_options(cfg: DictConfig) -> None:
    """Raise ConfigError for a strategy/precision/option combination the libraries do not
    support, instead of failing (or silently doing something else) inside a rank."""
    trainer = cfg.trainer
    kind = strategy_kind(trainer)
    precision = str(trainer.get("precision", "32-true"))
    clip = trainer.get("gradient_clip_val")
    algorithm = trainer.get("gradient_clip_algorithm") or "norm"
    if kind in ("deepspeed", "fsdp") and precision in ("64-true", "64", "double"):
        raise ConfigError("trainer.precision", f"{kind} has no float64 mode; use 32-true (or trainer=ddp for 64-true)")
    if kind == "deepspeed" and clip and algorithm == "value":
        raise ConfigError("trainer.gradient_clip_algorithm", "DeepSpeed clips by norm only; drop gradient_clip_algorithm=value")
    if kind == "fsdp" and clip and algorithm == "norm":
        raise ConfigError(
            "trainer.gradient_clip_algorithm",
            "Lightning's FSDP cannot clip by the global norm; use +trainer.gradient_clip_algorithm=value (or a deepspeed_* trainer)",
        )
    if kind == "deepspeed":
        strategy = trainer.strategy
        offload = not isinstance(strategy, str) and (strategy.get("offload_optimizer") or strategy.get("offload_parameters"))
        optimizer = str(OmegaConf.select(cfg, "model.optimizer._target_", default=""))
        if offload and optimizer and optimizer not in _ADAM:
            raise ConfigError(
                "model.optimizer",
                f"DeepSpeed offload steps the optimizer with its CPU Adam; {optimizer} is not Adam/AdamW: use model/optimizer=adamw",
            )
