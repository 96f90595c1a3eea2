"""Text for language models: a user's file or folder, or the Python standard library's sources."""

import math
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule
from dtrain.data.batched import window_index
from dtrain.data.sources import source_files, stdlib_dir
from dtrain.data.splits import in_order
from dtrain.data.user_files import check_text
from dtrain.data.tokenizer import ByteTokenizer, check_tokenizer, make_tokenizer

# Sub-folders of a corpus folder that are not its own text (tests, caches, vendored packages, the stdlib's demos).
SKIP = frozenset({"site-packages", "test", "tests", "__pycache__", "idlelib", "turtledemo"})


def read_corpus(path: Path, pattern: str, max_bytes: int) -> bytes:
    """A file's bytes, or a folder's matching files (sorted, so the corpus is reproducible)."""
    if path.is_file():
        return path.read_bytes()[:max_bytes]
    chunks, size = [], 0
    for file in source_files(path, pattern, SKIP):
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

    def gather(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at `indices`, stacked (dtrain.data.batched)."""
        windows = self.tokens[window_index(torch.as_tensor(indices) * self.block_size, self.block_size + 1)]
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


class TextDataModule(DataModule):
    """A corpus cut into train/val/test text in order (the last `val_fraction` and
    `test_fraction` held out), tokenized as raw bytes (`tokenizer=bytes`: 256 ids, bits per token
    are bits per character) or by a byte-level BPE of `vocab_size` ids trained on the training
    text (`tokenizer=bpe`; learned once per text and size, kept under `cache_dir`), saved as
    `run_dir`/tokenizer.json and reused from there when the run is resumed or evaluated (the
    config gives `run_dir: ${paths.run_dir}` and `cache_dir: ${paths.cache_dir}`)."""

    def __init__(
        self,
        path: str | None = None,
        pattern: str = "*.py",
        max_bytes: int = 2_000_000,
        block_size: int = 128,
        tokenizer: str = "bytes",
        vocab_size: int = 4096,
        run_dir: str | None = None,
        cache_dir: str | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        **shared,
    ):
        super().__init__(val_fraction=val_fraction, test_fraction=test_fraction, **shared)
        self.tokenizer_name = check_tokenizer(tokenizer)
        self.path = Path(path) if path is not None else stdlib_dir()
        self.run_dir, self.cache_dir = run_dir, cache_dir
        self.pattern, self.max_bytes, self.block_size = pattern, max_bytes, block_size
        self.bpe_vocab_size = vocab_size
        # Bytes are known now; a BPE is learned from the training text, with the splits.
        self.tokenizer = ByteTokenizer() if tokenizer == "bytes" else None
        self._splits: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _corpus(self) -> bytes:
        if not self.path.exists():
            raise ConfigError("data.path", f"{self.path} does not exist; give a text file or a folder of them")
        corpus = read_corpus(self.path, self.pattern, self.max_bytes)
        check_text(corpus, self.path)
        if len(corpus) < 20 * self.block_size:
            raise ConfigError("data.path", f"{self.path} holds {len(corpus)} bytes matching {self.pattern!r}; need at least {20 * self.block_size}")
        return corpus

    @property
    def splits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids of the train, val and test text."""
        if self._splits is None:
            corpus = self._corpus()
            train_end, val_end = in_order(len(corpus), self.val_fraction, self.test_fraction, rounding=math.ceil)
            pieces = corpus[:train_end], corpus[train_end:val_end], corpus[val_end:]
            training_text = lambda: pieces[0].decode("utf-8", errors="replace")  # noqa: E731
            self.tokenizer = make_tokenizer(self.tokenizer_name, self.bpe_vocab_size, training_text, self.run_dir, self.cache_dir)
            self._splits = tuple(self.tokenizer.encode(piece) for piece in pieces)
        return self._splits

    @property
    def shapes(self) -> dict[str, int]:
        if self.tokenizer is None:
            self.splits  # learns the BPE
        tokenizer = self.tokenizer
        return {"vocab_size": tokenizer.vocab_size, "block_size": self.block_size, "mask_token": tokenizer.mask_token, "mlm_vocab_size": tokenizer.mlm_vocab_size}

    @property
    def baselines(self) -> dict[str, float]:
        counts = torch.bincount(torch.cat(self.splits)).double()
        p = counts[counts > 0] / counts.sum()
        # The best constant guess, chosen knowing the test text: a masked LM that always
        # answered the test text's commonest token would score `most_frequent_token_acc`.
        test = self.splits[2]
        return {"unigram_entropy_bits": float(-(p * p.log2()).sum()), "most_frequent_token_acc": float(torch.bincount(test).max() / len(test))}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = (TokenBlocks(tokens, self.block_size) for tokens in self.splits)
