"""Text to token ids: raw bytes, or a byte-level BPE trained on the run's own training text."""

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch

MASK = "[MASK]"
TOKENIZER_FILE = "tokenizer.json"  # a run's learned BPE, in its run directory


def byte_tokens(text: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(text), dtype=torch.uint8).long()


class BytePairTokenizer:
    """Byte-level BPE (Hugging Face `tokenizers`) learned from `training_text` alone, so nothing
    is downloaded and validation/test text never shapes the vocabulary. Training is
    deterministic, so every rank that trains it on the same text gets the same ids.
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

    def encode(self, text: str) -> torch.Tensor:
        encodings = self.tokenizer.encode_batch(self._chunks(text))
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


def run_bpe(training_text: Callable[[], str], vocab_size: int, run_dir: str | Path | None) -> BytePairTokenizer:
    """The run's BPE: `run_dir`/tokenizer.json when the run has one (a resumed run, or an
    evaluation of its checkpoints, encodes exactly as the run trained), otherwise learned from
    `training_text()` and saved there. Without a run directory it is learned and not saved."""
    path = Path(run_dir) / TOKENIZER_FILE if run_dir is not None else None
    if path is not None and path.is_file():
        return BytePairTokenizer.load(path)
    tokenizer = BytePairTokenizer(training_text(), vocab_size)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(path)
    return tokenizer
