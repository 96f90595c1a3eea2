"""Text to token ids: raw bytes, or a byte-level BPE trained on the run's own training text."""

import re

import torch

MASK = "[MASK]"


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
        self.tokenizer.save(str(path))
