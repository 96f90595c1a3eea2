"""Train/val/test splits every datamodule uses: deterministic, and independent of the run's seed.

Shuffled samples are split (stratified by their labels when given) with scikit-learn; ordered
data (a text, a series) is cut in order; groups (a class's files) are shuffled and cut per group.
"""

import random
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from dtrain.config.errors import ConfigError


def carve(indices: np.ndarray, fraction: float, labels=None, seed: int = 0, key: str = "data.val_fraction"):
    """(kept, carved): `fraction` of `indices` carved out, stratified by `labels[indices]` when
    labels (one per sample of the whole set) are given; a one-line error when it cannot be."""
    try:
        return train_test_split(indices, test_size=fraction, random_state=seed, stratify=None if labels is None else labels[indices])
    except ValueError as error:
        raise ConfigError(key, f"cannot carve {fraction} of {len(indices)} samples{' (stratified)' if labels is not None else ''}: {error}") from None


def split_indices(n: int, val_fraction: float, test_fraction: float, labels=None, seed: int = 0):
    """Index arrays (train, val, test) of `n` shuffled samples; stratified by `labels` when given."""
    rest, test = carve(np.arange(n), test_fraction, labels, seed, key="data.test_fraction")
    train, val = carve(rest, val_fraction / (1 - test_fraction), labels, seed)
    return train, val, test


def in_order(n: int, val_fraction: float, test_fraction: float, rounding: Callable[[float], int] = round) -> tuple[int, int]:
    """(train end, val end) of `n` ordered items: train first, then val, then test, each share
    rounded by `rounding` (text rounds up, so a short text still holds out some of itself)."""
    n_val, n_test = rounding(n * val_fraction), rounding(n * test_fraction)
    return n - n_val - n_test, n - n_test


def split_groups(groups: Sequence[Sequence], val_fraction: float, test_fraction: float, seed: int = 0) -> list[list[tuple]]:
    """[train, val, test] lists of (item, group number): each group's items shuffled (one RNG
    seeded by `seed`, in group order), at least one item of every group in val and in test."""
    rng = random.Random(seed)
    splits: list[list[tuple]] = [[], [], []]
    for number, group in enumerate(groups):
        items = list(group)
        rng.shuffle(items)
        n_test = max(1, round(test_fraction * len(items)))
        n_val = max(1, round(val_fraction * len(items)))
        parts = items[n_test + n_val :], items[n_test : n_test + n_val], items[:n_test]
        for split, part in zip(splits, parts):
            split.extend((item, number) for item in part)
    return splits

