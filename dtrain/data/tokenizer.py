"""Text to token ids: raw bytes, or a byte-level BPE trained on the run's own training text.

Both tokenizers have one interface: `encode(bytes) -> ids`, `decode(ids) -> str`, `vocab_size`,
`mask_token` (the id a masked LM predicts from) and `mlm_vocab_size` (the ids a masked LM's
output covers), `save(path)` and `load(path)`. `make_tokenizer` is how a datamodule gets one.
"""

import fcntl
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch

from dtrain.config.errors import ConfigError

MASK = "[MASK]"
TOKENIZER_FILE = "tokenizer.json"  # a run's learned BPE, in its run directory
TOKENIZERS = ("bytes", "bpe")
BPE_CACHE = "tokenizers"  # folder under paths.cache_dir: one learned BPE per (training text, vocabulary size)


def _text(data: bytes | str) -> str:
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data


class ByteTokenizer:
    """Raw bytes: 256 ids, bits per token are bits per character. The mask is one id past the
    bytes, so a masked LM's embedding and output cover 257 ids. Nothing to learn or to save."""

    vocab_size = 256
    mask_token = 256
    mlm_vocab_size = 257

    def encode(self, data: bytes | str) -> torch.Tensor:
        data = data.encode("utf-8") if isinstance(data, str) else data
        if not data:  # torch.frombuffer refuses an empty buffer (an empty __init__.py)
            return torch.zeros(0, dtype=torch.long)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()

    def decode(self, ids: torch.Tensor) -> str:
        return bytes(int(i) for i in ids.tolist() if i < 256).decode("utf-8", errors="replace")

    def save(self, path) -> None:  # bytes need no file; the interface is the BPE's
        pass

    @classmethod
    def load(cls, path) -> "ByteTokenizer":
        return cls()


class BytePairTokenizer:
    """Byte-level BPE (Hugging Face `tokenizers`) learned from `training_text` alone, so nothing
    is downloaded and validation/test text never shapes the vocabulary. Training is
    deterministic: the same text and vocabulary size give the same ids.
    Frequent pieces of code or prose (`self`, `return`, a newline plus its indentation) become
    single tokens; any byte is still representable, so there is no unknown token."""

    def __init__(self, training_text: str, vocab_size: int):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        self.tokenizer = Tokenizer(models.BPE())
        self.tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self.tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[MASK],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        self.tokenizer.train_from_iterator(self._chunks(training_text), trainer)

    @staticmethod
    def _chunks(text: str) -> list[str]:
        # Paragraph-sized pieces (split after blank lines): encoded in parallel, and no token
        # is lost, since a blank line ends every piece the same way.
        return re.split(r"(?<=\n\n)", text)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def mask_token(self) -> int:
        return self.tokenizer.token_to_id(MASK)

    @property
    def mlm_vocab_size(self) -> int:  # the mask is one of the learned ids
        return self.vocab_size

    def encode(self, data: bytes | str) -> torch.Tensor:
        """Bytes are read as UTF-8 (an invalid sequence becomes U+FFFD)."""
        encodings = self.tokenizer.encode_batch(self._chunks(_text(data)))
        return torch.tensor([i for encoding in encodings for i in encoding.ids], dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        return self.tokenizer.decode(ids.tolist())

    def save(self, path) -> None:
        """Written whole or not at all (ranks that learned the same BPE may write at once)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.tokenizer.save(str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "BytePairTokenizer":
        from tokenizers import Tokenizer

        loaded = cls.__new__(cls)
        loaded.tokenizer = Tokenizer.from_file(str(path))
        return loaded


def bpe_cache_file(cache_dir: str | Path, training_text: str, vocab_size: int) -> Path:
    """Where the BPE learned from `training_text` with `vocab_size` ids is kept: named by a hash
    of both (and of the `tokenizers` version, whose training may change between releases)."""
    import tokenizers

    key = hashlib.sha256(f"{tokenizers.__version__}\0{vocab_size}\0".encode() + training_text.encode("utf-8", "surrogatepass"))
    return Path(cache_dir) / BPE_CACHE / f"bpe-{vocab_size}-{key.hexdigest()[:20]}.json"


def cached_bpe(training_text: str, vocab_size: int, cache_dir: str | Path | None) -> BytePairTokenizer:
    """The BPE for this text and vocabulary size from `cache_dir`, learned and kept there the
    first time. A lock makes the ranks (and runs) that start together learn it once: the first
    learns, the others wait and load it."""
    if cache_dir is None:
        return BytePairTokenizer(training_text, vocab_size)
    path = bpe_cache_file(cache_dir, training_text, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.is_file():
                return BytePairTokenizer.load(path)
            tokenizer = BytePairTokenizer(training_text, vocab_size)
            tokenizer.save(path)
            return tokenizer
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_tokenizer(name: str) -> str:
    if name not in TOKENIZERS:
        raise ConfigError("data.tokenizer", f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
    return name


def make_tokenizer(
    name: str, vocab_size: int, training_text: Callable[[], str], run_dir: str | Path | None = None, cache_dir: str | Path | None = None
) -> ByteTokenizer | BytePairTokenizer:
    """The run's tokenizer. `bytes`: raw bytes. `bpe`: `run_dir`/tokenizer.json when the run has
    one (a resumed run, or an evaluation of its checkpoints, encodes exactly as the run trained);
    otherwise the BPE of `training_text()` with `vocab_size` ids from `cache_dir` (learned once,
    see `cached_bpe`; learned every time without a cache), saved as the run's tokenizer.json."""
    if check_tokenizer(name) == "bytes":
        return ByteTokenizer()
    path = Path(run_dir) / TOKENIZER_FILE if run_dir is not None else None
    if path is not None and path.is_file():
        return BytePairTokenizer.load(path)
    tokenizer = cached_bpe(training_text(), vocab_size, cache_dir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(path)
    return tokenizer

