"""What each case trains: the full sizes for one H100/H200 and the tiny ones of the CPU dry run."""

from dataclasses import asdict, dataclass


class Steps:
    """`steps` in all: `warmup` untimed (compilation, cuDNN's search, worker start), then windows of
    `window` steps (dtrain's log_every_n_steps), each side reporting its median window."""

    def __post_init__(self):
        if self.warmup < 1 or self.steps <= self.warmup or (self.steps - self.warmup) % self.window:
            raise ValueError(f"steps={self.steps} must be warmup={self.warmup} (at least 1) and whole windows of {self.window}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DecoderCase(Steps):
    """A GPT-style decoder (dtrain.nets.transformer.Transformer, causal, tied embeddings)."""

    vocab_size: int
    block_size: int
    d_model: int
    n_layers: int
    n_heads: int
    batch_size: int
    steps: int
    warmup: int
    window: int
    lr: float = 2e-3  # conf/model/transformer.yaml's AdamW
    weight_decay: float = 0.1
    num_workers: int = 0


@dataclass(frozen=True)
class ResNetCase(Steps):
    """A torchvision ResNet (dtrain.nets.vision.VisionNet) on random images, channels-last."""

    arch: str
    image_size: int
    num_classes: int
    batch_size: int
    steps: int
    warmup: int
    window: int
    distinct: int  # different images in the generated set (they repeat after that)
    num_workers: int
    lr: float = 3e-3  # conf/model/optimizer/adamw.yaml, which conf/model/resnet.yaml keeps
    weight_decay: float = 0.01


# GPT-2 small: 124M parameters with tied embeddings (plus 0.8M positions), 1,024 tokens.
GPU_DECODER = DecoderCase(vocab_size=50304, block_size=1024, d_model=768, n_layers=12, n_heads=12, batch_size=32, steps=120, warmup=10, window=10)
GPU_RESNET = ResNetCase(arch="resnet50", image_size=224, num_classes=1000, batch_size=128, steps=70, warmup=10, window=10, distinct=256, num_workers=8)

# Seconds on a CPU: real optimizer steps through the same code, nothing else.
TINY_DECODER = DecoderCase(vocab_size=256, block_size=64, d_model=64, n_layers=2, n_heads=2, batch_size=8, steps=12, warmup=4, window=4)
TINY_RESNET = ResNetCase(arch="resnet18", image_size=16, num_classes=10, batch_size=4, steps=6, warmup=2, window=2, distinct=8, num_workers=0)


def cases(tiny: bool) -> tuple[DecoderCase, ResNetCase]:
    return (TINY_DECODER, TINY_RESNET) if tiny else (GPU_DECODER, GPU_RESNET)
