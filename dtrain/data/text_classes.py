"""Labelled text snippets: a folder of class folders of text files, or by default the Python
standard library, each snippet labelled with the package its source file belongs to."""

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule
from dtrain.data.sources import source_files, stdlib_dir
from dtrain.data.splits import split_groups
from dtrain.data.tokenizer import ByteTokenizer, check_tokenizer, make_tokenizer

# Packages every Python >= 3.11 ships with at least five source files outside its tests.
STDLIB_PACKAGES = ["asyncio", "email", "importlib", "multiprocessing", "xml", "unittest", "ctypes", "urllib", "http", "json"]
SKIP = frozenset({"test", "tests", "__pycache__"})  # sub-folders whose files are no class's own text


class TextClassesDataModule(DataModule):
    """Snippets of `block_size` tokens cut from each file; the label is the file's class folder.

    Files, not snippets, are split (per class, so every class has validation and test files):
    a test snippet never comes from a file seen in training. The tokenizer (`bytes`, or `bpe`
    learned from the training files, kept under `cache_dir`, saved in and reused from `run_dir`)
    is made as `data=text` makes it.
    """

    def __init__(
        self,
        path: str | None = None,
        classes: list[str] | None = None,
        pattern: str = "*.py",
        block_size: int = 64,
        tokenizer: str = "bpe",
        vocab_size: int = 4096,
        split_seed: int = 0,
        run_dir: str | None = None,
        cache_dir: str | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        **shared,
    ):
        super().__init__(val_fraction=val_fraction, test_fraction=test_fraction, **shared)
        self.tokenizer_name = check_tokenizer(tokenizer)
        self.path = Path(path) if path is not None else stdlib_dir()
        self.run_dir, self.cache_dir = run_dir, cache_dir
        if not self.path.is_dir():
            raise ConfigError("data.path", f"{self.path} is not a folder; give a folder of class folders of text files")
        self.classes = list(classes) if classes else (STDLIB_PACKAGES if path is None else self._class_folders())
        self.pattern, self.block_size = pattern, block_size
        self.bpe_vocab_size = vocab_size
        self.split_seed = split_seed
        # Bytes are known now; a BPE is learned from the training files, with the splits.
        self.tokenizer = ByteTokenizer() if tokenizer == "bytes" else None
        self._splits: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _class_folders(self) -> list[str]:
        folders = sorted(p.name for p in self.path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
        if len(folders) < 2:
            raise ConfigError("data.path", f"{self.path} needs at least two class folders of text files")
        return folders

    def _files(self, name: str) -> list[Path]:
        folder = self.path / name
        files = [f for f in source_files(folder, self.pattern, SKIP) if not f.name.startswith("test")]
        if len(files) < 3:
            raise ConfigError("data.classes", f"class {name!r} has {len(files)} files matching {self.pattern!r} in {folder}; each class needs at least 3 (train, val, test)")
        return files

    def _split_files(self) -> list[list[tuple[Path, int]]]:
        """[train, val, test] lists of (file, label): each class's files shuffled by split_seed,
        at least one file of every class in each split."""
        return split_groups([self._files(name) for name in self.classes], self.val_fraction, self.test_fraction, self.split_seed)

    def _snippets(self, files: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        blocks, labels = [], []
        for file, label in files:
            tokens = self.tokenizer.encode(file.read_bytes())
            count = len(tokens) // self.block_size
            blocks.append(tokens[: count * self.block_size].view(count, self.block_size))
            labels += [label] * count
        return torch.cat(blocks), torch.tensor(labels)

    @property
    def splits(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(snippets, labels) of train, val and test."""
        if self._splits is None:
            files = self._split_files()
            # read_text, not the bytes the snippets are cut from: universal newlines, as the BPE always learned
            training_text = lambda: "\n".join(f.read_text(encoding="utf-8", errors="replace") for f, _ in files[0])  # noqa: E731
            self.tokenizer = make_tokenizer(self.tokenizer_name, self.bpe_vocab_size, training_text, self.run_dir, self.cache_dir)
            self._splits = [self._snippets(split) for split in files]
            for name, (_, labels) in zip(("train", "val", "test"), self._splits):
                if len(labels.unique()) < len(self.classes):
                    raise ConfigError("data.block_size", f"some class has no {name} file of {self.block_size} tokens or more; use a smaller block_size")
        return self._splits

    @property
    def shapes(self) -> dict[str, int]:
        if self.tokenizer is None:
            self.splits  # learns the BPE
        tokenizer = self.tokenizer
        return {
            "vocab_size": tokenizer.vocab_size,
            "block_size": self.block_size,
            "num_classes": len(self.classes),
            "num_outputs": len(self.classes),
            "mask_token": tokenizer.mask_token,
            "mlm_vocab_size": tokenizer.mlm_vocab_size,
        }

    @property
    def baselines(self) -> dict[str, float]:
        train_labels, test_labels = self.splits[0][1], self.splits[2][1]
        majority = torch.bincount(train_labels).argmax()
        return {"majority_class_acc": float((test_labels == majority).double().mean())}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = (TensorDataset(x, y) for x, y in self.splits)
