"""data=generated_tokens and data=generated_images: sizes as asked, splits that share nothing and
do not move with the run's seed, the same samples every time, one-line errors for bad sizes."""

import pytest
import torch

from dtrain.config.errors import ConfigError
from dtrain.data.generated import GeneratedImagesDataModule, GeneratedTokensDataModule


def splits(datamodule):
    datamodule.setup("fit")
    return datamodule.train_set, datamodule.val_set, datamodule.test_set


def test_tokens_are_next_token_windows_of_the_asked_sizes_and_splits_apart():
    data = GeneratedTokensDataModule(vocab_size=50, block_size=16, train_samples=40, val_samples=6, test_samples=5, seed=1)
    train, val, test = splits(data)
    assert (len(train), len(val), len(test)) == (40, 6, 5)
    assert data.shapes == {"vocab_size": 50, "block_size": 16}
    inputs, targets = train[3]
    assert inputs.shape == targets.shape == (16,) and inputs.dtype == torch.int64
    assert torch.equal(inputs[1:], targets[:-1])  # targets are the inputs shifted by one
    assert int(train.tokens.max()) < 50 and len(train.tokens.unique()) > 40  # all of the vocabulary, not a constant
    rows = lambda dataset: {tuple(row.tolist()) for row in dataset.tokens}  # noqa: E731
    assert not rows(train) & rows(val) and not rows(train) & rows(test) and not rows(val) & rows(test)
    other_run_seed = splits(GeneratedTokensDataModule(vocab_size=50, block_size=16, train_samples=40, val_samples=6, test_samples=5, seed=2))
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip((train, val, test), other_run_seed))
    other_data = splits(GeneratedTokensDataModule(vocab_size=50, block_size=16, train_samples=40, val_samples=6, test_samples=5, data_seed=1))
    assert not torch.equal(train.tokens, other_data[0].tokens)


def test_images_repeat_after_distinct_and_have_their_own_labels():
    data = GeneratedImagesDataModule(image_size=8, channels=3, num_classes=4, train_samples=20, val_samples=4, test_samples=4, distinct=5)
    train, val, _ = splits(data)
    assert data.shapes["in_channels"] == 3 and data.shapes["image_size"] == 8 and data.shapes["num_classes"] == 4
    image, label = train[2]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and 0 <= int(label) < 4
    assert -1 <= float(image.min()) and float(image.max()) <= 1
    assert torch.equal(train[2][0], train[7][0]) and not torch.equal(train[2][0], train[3][0])
    assert len(train.pixels) == 5 and len({int(train[i][1]) for i in range(20)}) > 1
    assert not torch.equal(train.pixels[:4], val.pixels[:4])


@pytest.mark.parametrize("key, value", [("train_samples", 0), ("block_size", -3), ("vocab_size", 2.5)])
def test_a_size_that_is_not_a_positive_whole_number_is_a_one_line_error(key, value):
    with pytest.raises(ConfigError, match=f"data.{key}"):
        GeneratedTokensDataModule(**{key: value})
