"""Text beyond bytes: the BPE tokenizer, labelled snippets (a user's class folders, the stdlib's
packages), sequence classification with the encoder, and fine-tuning from a masked-LM run."""

import pytest
import torch

from tests.bars import stop_at
from tests.conftest import dtrain_cli
from tests.test_errors import assert_clean_error

PROSE = "the quick brown fox jumps over the lazy dog while the cat sleeps by the fire. "


def test_bpe_is_learned_deterministically_and_loses_nothing():
    from dtrain.data.tokenizer import BytePairTokenizer

    training = (PROSE * 50 + "def function(self, value):\n    return self.value\n\n") * 20
    first, second = BytePairTokenizer(training, 300), BytePairTokenizer(training, 300)
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()  # every rank gets the same ids
    unseen = "Grüße, naïve café — ∑ x² ✓\n\tend"
    ids = first.encode(unseen)
    assert first.decode(ids) == unseen  # byte-level: no unknown token, any text round-trips
    assert len(first.encode(" the quick brown")) < len(" the quick brown") / 2  # frequent words merged
    assert first.mask_token not in first.encode(training).tolist()


def write_class_folders(root, files_per_class: int = 4):
    """Three classes of text files whose words tell them apart."""
    words = {"animals": "cat dog horse cow sheep goat ", "colours": "red green blue yellow violet ", "numbers": "one two three four five six "}
    for name, text in words.items():
        for i in range(files_per_class):
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / f"{i}.txt").write_text((text * 40 + f"file {i}\n") * 3)
    return sorted(words)


def test_both_tokenizers_share_one_interface(tmp_path):
    from dtrain.data.tokenizer import ByteTokenizer, BytePairTokenizer

    text = "Grüße, naïve café\n\tend"
    learned = BytePairTokenizer((PROSE * 50) * 5, 300)
    for tokenizer in (ByteTokenizer(), learned):
        ids = tokenizer.encode(text.encode())
        assert ids.dtype == torch.long and tokenizer.decode(ids) == text and torch.equal(tokenizer.encode(text), ids)
        assert tokenizer.encode(b"").tolist() == []  # an empty file is no error
        assert tokenizer.mask_token not in ids.tolist() and tokenizer.mask_token < tokenizer.mlm_vocab_size
        tokenizer.save(tmp_path / "tokenizer.json")
        again = type(tokenizer).load(tmp_path / "tokenizer.json")
        assert torch.equal(again.encode(text), ids) and again.vocab_size == tokenizer.vocab_size
    assert ByteTokenizer().encode(b"\x00\xff").tolist() == [0, 255] and ByteTokenizer().vocab_size == 256


def test_learned_bpe_is_cached_by_text_and_vocabulary_size(tmp_path, monkeypatch):
    """A second run on the same training text and vocab_size loads the BPE the first learned
    (from paths.cache_dir), and encodes the same; another vocab_size is learned and kept apart."""
    from hydra.utils import instantiate

    from dtrain.config.compose import compose
    from dtrain.data.tokenizer import BPE_CACHE, BytePairTokenizer

    (tmp_path / "corpus.txt").write_text((PROSE * 20 + "def f(self):\n    return self.x\n\n") * 10)
    cache = tmp_path / "cache"
    learned = []
    learn = BytePairTokenizer.__init__
    monkeypatch.setattr(BytePairTokenizer, "__init__", lambda self, text, size: (learned.append(size), learn(self, text, size))[1])

    def splits(name: str, vocab_size: int):
        overrides = ["data=text_bpe", f"data.path={tmp_path / 'corpus.txt'}", f"data.vocab_size={vocab_size}", f"paths.cache_dir={cache}"]
        data = instantiate(compose(overrides, run_dir=tmp_path / name).data)
        result = data.splits, data.shapes["vocab_size"]
        assert (tmp_path / name / "tokenizer.json").is_file()  # the run still keeps its own
        return result

    first, size = splits("run1", 300)
    assert learned == [300] and size == 300 and len(list((cache / BPE_CACHE).glob("*.json"))) == 1
    second, _ = splits("run2", 300)
    assert learned == [300]  # loaded, not learned again
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    other, size = splits("run3", 280)
    assert learned == [300, 280] and size == 280 and len(list((cache / BPE_CACHE).glob("*.json"))) == 2
    splits("run4", 280)
    assert learned == [300, 280]


def test_text_classes_as_bytes_keeps_empty_files(tmp_path):
    """An empty file (a package's __init__.py) gives no snippets; it used to stop `tokenizer=bytes`."""
    from dtrain.data.text_classes import TextClassesDataModule

    write_class_folders(tmp_path)
    (tmp_path / "animals" / "empty.txt").write_text("")
    data = TextClassesDataModule(path=str(tmp_path), pattern="*.txt", block_size=16, tokenizer="bytes", val_fraction=0.25, test_fraction=0.25)
    assert data.shapes["vocab_size"] == 256 and data.shapes["mlm_vocab_size"] == 257
    snippets, labels = data.splits[0]
    assert snippets.shape[1] == 16 and set(labels.tolist()) == {0, 1, 2}


def test_text_classes_split_files_not_snippets(tmp_path):
    from dtrain.data.text_classes import TextClassesDataModule

    classes = write_class_folders(tmp_path)
    data = TextClassesDataModule(path=str(tmp_path), pattern="*.txt", block_size=16, vocab_size=300, val_fraction=0.25, test_fraction=0.25)
    assert data.shapes["num_classes"] == 3 and data.classes == classes
    train, val, test = data._split_files()
    files = [{f for f, _ in split} for split in (train, val, test)]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    for split in (train, val, test):
        assert {label for _, label in split} == {0, 1, 2}  # every class in every split
    snippets, labels = data.splits[2]
    assert snippets.shape[1] == 16 and len(snippets) == len(labels) > 0


def test_language_model_names_bits_by_what_a_token_is(train, tmp_path):
    """Bits per token are bits per character (`bpc`) only when the tokens are bytes."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(PROSE * 400)
    common = ["model=transformer", f"data.path={corpus}", "data.pattern=*.txt", "budget=smoke", "data.batch_size=8"]
    metrics, _ = train(*common)
    assert "test/bpc" in metrics and "test/bits_per_token" not in metrics
    metrics, _ = train(*common, "data=text_bpe", "data.vocab_size=300")
    assert "test/bits_per_token" in metrics and "test/bpc" not in metrics
    assert metrics["test/bits_per_token"] > 0


def test_classifier_and_masked_lm_on_a_users_class_folders(train, tmp_path):
    write_class_folders(tmp_path / "docs")
    common = [f"data.path={tmp_path / 'docs'}", "data.pattern=*.txt", "data.block_size=16", "data.vocab_size=300", "data.val_fraction=0.25", "data.test_fraction=0.25"]
    metrics, _ = train("model=bert_classifier", "data=text_classes", *common, "data.batch_size=8", "trainer.max_epochs=3", "model.optimizer.lr=3e-3")
    assert metrics["test/acc"] == 1.0, metrics  # the words give the class away
    metrics, _ = train("model=bert", "data=text_classes", *common, "budget=smoke", "data.batch_size=8")
    assert 0 <= metrics["test/masked_acc"] <= 1


def test_fine_tuning_starts_from_the_pretrained_encoder(train, tmp_path):
    """`+model.init_from=<masked-LM checkpoint>` copies every matching weight; the new head
    (classes, not vocabulary) keeps its fresh initialisation."""
    from dtrain.nets.transformer import Transformer
    from dtrain.tasks.base import load_matching_weights

    write_class_folders(tmp_path / "docs")
    common = [f"data.path={tmp_path / 'docs'}", "data.pattern=*.txt", "data.block_size=16", "data.vocab_size=300", "data.batch_size=8", "budget=smoke"]
    _, pretrain = train("model=bert", "data=text_classes", *common)
    checkpoint = pretrain / "checkpoints" / "last.ckpt"
    metrics, _ = train("model=bert_classifier", *common, f"+model.init_from={checkpoint}")
    assert "test/acc" in metrics

    pretrained = torch.load(checkpoint, weights_only=True)["state_dict"]
    net = Transformer(vocab_size=300, max_len=16, d_model=128, n_layers=2, n_heads=4, causal=False, out_features=3, pool="mean")
    untouched = load_matching_weights(net, str(checkpoint))
    assert untouched == ["head.proj.weight"]
    assert torch.equal(net.embed.tokens.weight, pretrained["net.embed.tokens.weight"])
    assert torch.equal(net.blocks[1].mlp.up.weight, pretrained["net.blocks.1.mlp.up.weight"])


def test_init_from_a_missing_checkpoint_is_a_clean_error(tmp_path):
    done = dtrain_cli("model=cnn", "+model.init_from=nowhere.ckpt", "budget=smoke", cwd=tmp_path)
    assert_clean_error(done, "model.init_from", tmp_path, fix="checkpoint", leaves_no_run_dir=False)


@pytest.mark.bars
def test_bert_classifies_stdlib_packages(train, record_bar):
    """Which of ten stdlib packages a 64-token snippet comes from, judged on files never trained on."""
    metrics, _ = train("model=bert_classifier", *stop_at("val/acc", 0.5))
    bar = 2 * metrics["baseline/majority_class_acc"]
    record_bar("test/acc", metrics["test/acc"], bar)
    assert metrics["test/acc"] >= bar, metrics
