"""The train/val/test splits (dtrain/data/splits.py) every datamodule takes: disjoint, stratified
where labels are given, independent of the run's seed, and pinned: the values below are the
splits dtrain made before its datamodules shared splits.py, so a refactor that moves a sample
from one split to another fails here."""

import hashlib
import math

import numpy as np
import pytest
import sklearn.datasets

from dtrain.data.splits import in_order, split_groups, split_indices


def index_hash(parts) -> str:
    return hashlib.sha256(b"".join(np.asarray(p, dtype=np.int64).tobytes() for p in parts)).hexdigest()[:16]


def content_hash(dataset) -> str:
    digest = hashlib.sha256(str(len(dataset)).encode())
    for i in range(len(dataset)):
        for tensor in dataset[i]:
            digest.update(str(tensor.dtype).encode() + tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize(
    ("loader", "val", "test", "seed", "stratified", "pinned"),
    [
        ("load_digits", 0.1, 0.2, 0, True, "d6ec6ce85e273b3e"),  # data=digits, data=sequences
        ("load_breast_cancer", 0.15, 0.2, 0, True, "e5ca1134f7ff38c9"),  # data=tabular
        ("load_wine", 0.15, 0.2, 3, True, "a6a87c5c2603026f"),  # data=tabular data.dataset=wine data.split_seed=3
        ("load_diabetes", 0.15, 0.2, 0, False, "92c4a663c645cda9"),  # data=diabetes (regression: not stratified)
    ],
)
def test_shuffled_splits_are_disjoint_stratified_and_pinned(loader, val, test, seed, stratified, pinned):
    labels = getattr(sklearn.datasets, loader)().target
    parts = split_indices(len(labels), val, test, labels=labels if stratified else None, seed=seed)
    assert index_hash(parts) == pinned
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))  # disjoint, nothing lost
    for part, share in zip(parts, (1 - val - test, val, test)):
        assert abs(len(part) - share * len(labels)) <= 2  # two roundings (test, then val of the rest)
        if stratified:  # every class in its share, to within one sample
            for label in np.unique(labels):
                assert abs((labels[part] == label).sum() - share * (labels == label).sum()) <= 2


def test_ordered_and_grouped_splits():
    assert in_order(309, 0.15, 0.15) == (217, 263)  # sunspots: 46 and 46 years held out, in order
    assert in_order(1001, 0.05, 0.05, rounding=math.ceil) == (899, 950)  # text rounds up
    groups = [[f"a{i}" for i in range(10)], [f"b{i}" for i in range(3)]]
    train, val, test = split_groups(groups, 0.15, 0.15, seed=0)
    assert split_groups(groups, 0.15, 0.15, seed=0) == [train, val, test] != split_groups(groups, 0.15, 0.15, seed=1)
    for part in (val, test):
        assert {group for _, group in part} == {0, 1}  # every group in val and in test
    items = [item for part in (train, val, test) for item, _ in part]
    assert sorted(items) == sorted(sum(groups, [])) and len(train) == 6 + 1  # a group of 10 keeps 2 + 2 back, one of 3 keeps 1 + 1


@pytest.mark.parametrize(
    ("data", "overrides", "pinned"),
    [
        ("digits", [], ("653e7407cbf3ace3", "ca4573ca9b5963d2", "067996f418a45ee3")),
        ("digits", ["data.holdout_class=3"], ("7bfd791dd209fdc2", "ca4573ca9b5963d2", "067996f418a45ee3")),
        ("sequences", [], ("a8198467c373a541", "8dd2941cb58bc5fe", "a3cb94fba7e5d573")),
        ("seq2seq", [], ("ec23abdcd72e99a5", "d3df693fae485481", "795fc599256b6ef3")),
    ],
)
def test_datamodule_splits_are_pinned_and_do_not_follow_the_run_seed(data, overrides, pinned, tmp_path):
    from hydra.utils import instantiate

    from dtrain.config.compose import compose

    hashes = []
    for seed in (0, 7):
        datamodule = instantiate(compose([f"data={data}", f"seed={seed}", *overrides], run_dir=tmp_path).data)
        datamodule.setup("fit")
        hashes.append(tuple(content_hash(s) for s in (datamodule.train_set, datamodule.val_set, datamodule.test_set)))
    assert hashes[0] == hashes[1] == pinned


def test_fractions_that_leave_nothing_to_train_on_are_a_config_error():
    from dtrain.config.errors import ConfigError
    from dtrain.data.digits import DigitsDataModule

    with pytest.raises(ConfigError, match=r"data.val_fraction: val_fraction 0.5 \+ test_fraction 0.5 leave nothing to train on"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="data.test_fraction: must be a share of the data from 0 up to 1, got -0.1"):
        DigitsDataModule(test_fraction=-0.1)
