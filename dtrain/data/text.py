"""Byte-level text for language models: a user's file or folder, or the Python standard library's sources."""

import math
import sysconfig
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule

VOCAB_SIZE = 256  # bytes; models never need a tokenizer download


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def read_corpus(path: Path, pattern: str, max_bytes: int) -> bytes:
    """A file's bytes, or a folder's matching files (sorted, so the corpus is reproducible)."""
    if path.is_file():
        return path.read_bytes()[:max_bytes]
    skip = {"site-packages", "test", "tests", "__pycache__", "idlelib", "turtledemo"}
    chunks, size = [], 0
    for file in sorted(path.rglob(pattern)):
        if not file.is_file() or skip.intersection(file.relative_to(path).parts[:-1]):
            continue
        data = file.read_bytes()
        chunks.append(data)
        size += len(data) + 1
        if size >= max_bytes:
            break
    return b"\n".join(chunks)[:max_bytes]


class TokenBlocks(Dataset):
    """Non-overlapping windows of `block_size` + 1 tokens: inputs and next-token targets."""

    def __init__(self, tokens: torch.Tensor, block_size: int):
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.block_size

    def __getitem__(self, i: int):
        window = self.tokens[i * self.block_size : (i + 1) * self.block_size + 1]
        return window[:-1], window[1:]


class TextDataModule(DataModule):
    def __init__(
        self,
        path: str | None = None,
        pattern: str = "*.py",
        max_bytes: int = 2_000_000,
        block_size: int = 128,
        batch_size: int = 64,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, seed)
        self.path = Path(path) if path is not None else stdlib_dir()
        self.pattern, self.max_bytes, self.block_size = pattern, max_bytes, block_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self._tokens: torch.Tensor | None = None

    @property
    def tokens(self) -> torch.Tensor:
        if self._tokens is None:
            if not self.path.exists():
                raise ConfigError("data.path", f"{self.path} does not exist; give a text file or a folder of them")
            corpus = read_corpus(self.path, self.pattern, self.max_bytes)
            if len(corpus) < 20 * self.block_size:
                raise ConfigError("data.path", f"{self.path} holds {len(corpus)} bytes matching {self.pattern!r}; need at least {20 * self.block_size}")
            self._tokens = torch.frombuffer(bytearray(corpus), dtype=torch.uint8).long()
        return self._tokens

    @property
    def shapes(self) -> dict[str, int]:
        # Masked-LM nets need one more token id than the bytes: the mask.
        return {"vocab_size": VOCAB_SIZE, "block_size": self.block_size, "mask_token": VOCAB_SIZE, "mlm_vocab_size": VOCAB_SIZE + 1}

    @property
    def baselines(self) -> dict[str, float]:
        counts = torch.bincount(self.tokens, minlength=VOCAB_SIZE).double()
        p = counts[counts > 0] / counts.sum()
        # A masked-LM that always guessed the commonest byte would score `most_frequent_token_acc`.
        return {"unigram_entropy_bits": float(-(p * p.log2()).sum()), "most_frequent_token_acc": float(p.max())}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        n = len(self.tokens)
        n_val, n_test = math.ceil(n * self.val_fraction), math.ceil(n * self.test_fraction)
        n_train = n - n_val - n_test
        pieces = self.tokens[:n_train], self.tokens[n_train : n_train + n_val], self.tokens[n_train + n_val :]
        self.train_set, self.val_set, self.test_set = (TokenBlocks(p, self.block_size) for p in pieces)
