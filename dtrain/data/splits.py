"""Deterministic train/val/test splits, independent of the run's seed."""

import numpy as np
from sklearn.model_selection import train_test_split


def split_indices(n: int, val_fraction: float, test_fraction: float, labels=None, seed: int = 0):
    """Index arrays (train, val, test); stratified by `labels` when given."""
    indices = np.arange(n)
    rest, test = train_test_split(indices, test_size=test_fraction, random_state=seed, stratify=labels)
    rest_labels = None if labels is None else labels[rest]
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), random_state=seed, stratify=rest_labels
    )
    return train, val, test
