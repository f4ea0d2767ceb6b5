"""A tokenizer is identified by its vocabulary hash, not by where its files were (issue 10, section 6).

A prepared dataset records the tokenizer's ``vocab_hash`` in ``meta.json``; a model trained on it records
it in its config; ``check_tokenizer`` compares the two. Records from before hashes (no ``vocab_hash``)
are still read, compared by name and vocabulary size as they were.
"""

import json

import pytest
import tokenizers

from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.prepared import PreparedDataset
from transrec.models.recommender import ModelConfig, dataset_tokenizer
from transrec.training.checkpoint import TransferError, check_tokenizer

from ..data.rawbuild import raw_dataset

WORDS = ["first", "second", "third", "fourth", "item"]


def save_word_tokenizer(directory, words=WORDS, lowercase=False):
    """A WordLevel fast tokenizer ([PAD] [UNK] [CLS] [SEP] then ``words``, in this order) saved to
    ``directory/tokenizer.json``; its vocabulary size is ``4 + len(words)``."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: 4 + i for i, w in enumerate(words)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    return directory


def prepared_with(tokenizer: str, output) -> PreparedDataset:
    """Three users x four items with texts, prepared with ``tokenizer`` (a spec or a directory)."""
    items = {
        "i1": ("First item", None),
        "i2": ("second item", None),
        "i3": ("third", None),
        "i4": ("x", None),
    }
    log = [("u1", "i1", 1), ("u1", "i2", 2), ("u1", "i3", 3), ("u2", "i2", 1), ("u2", "i4", 2),
           ("u2", "i1", 3), ("u3", "i4", 1), ("u3", "i3", 2), ("u3", "i1", 3)]  # fmt: skip
    config = PrepareConfig(user_k=1, item_k=1, tokenizer=tokenizer, hash_vocab_size=64)
    return prepare(raw_dataset(log, items), config, output, progress=False)


def trained_on(dataset: PreparedDataset) -> ModelConfig:
    """The model config the trainer records for a text model trained on ``dataset``."""
    return ModelConfig(item_encoder="text", tokenizer=dataset_tokenizer(dataset.meta))


def without_hash(dataset: PreparedDataset) -> PreparedDataset:
    """The same dataset as a transrec that did not record vocabulary hashes would have written it."""
    meta = json.loads((dataset.path / "meta.json").read_text())
    del meta["tokenizer"]["vocab_hash"]
    (dataset.path / "meta.json").write_text(json.dumps(meta))
    return PreparedDataset(dataset.path)


def test_the_same_vocabulary_from_two_directories_passes(tmp_path):
    # Two machines: the same tokenizer.json under two absolute paths, so the names differ.
    here = prepared_with(str(save_word_tokenizer(tmp_path / "machine_a" / "tok")), tmp_path / "a")
    there = prepared_with(str(save_word_tokenizer(tmp_path / "machine_b" / "tok")), tmp_path / "b")
    assert here.meta["tokenizer"]["name"] != there.meta["tokenizer"]["name"]
    assert here.meta["tokenizer"]["vocab_hash"].startswith("sha256:")
    check_tokenizer(trained_on(here), there, "ckpt")
    check_tokenizer(trained_on(there), here, "ckpt")


def test_a_different_vocabulary_of_the_same_size_is_refused(tmp_path):
    # The same directory (so the same name) and the same size, but two words swap ids: every old check
    # (name and vocabulary size) passes, yet the token ids mean other words.
    directory = tmp_path / "tok"
    before = prepared_with(str(save_word_tokenizer(directory)), tmp_path / "before")
    swapped = [WORDS[1], WORDS[0], *WORDS[2:]]
    after = prepared_with(str(save_word_tokenizer(directory, swapped)), tmp_path / "after")
    assert dataset_tokenizer(before.meta)["name"] == dataset_tokenizer(after.meta)["name"]
    assert dataset_tokenizer(before.meta)["vocab_size"] == dataset_tokenizer(after.meta)["vocab_size"]
    with pytest.raises(TransferError, match="the vocabularies differ"):
        check_tokenizer(trained_on(before), after, "ckpt")


def test_a_setting_that_changes_ids_changes_the_hash(tmp_path):
    # A lower-casing normaliser maps "First" to "first" (id 4) instead of [UNK]: another tokenizer.
    plain = prepared_with(str(save_word_tokenizer(tmp_path / "plain")), tmp_path / "p")
    lowered = prepared_with(str(save_word_tokenizer(tmp_path / "lower", lowercase=True)), tmp_path / "l")
    assert plain.text_tokens[1].tolist() != lowered.text_tokens[1].tolist()
    with pytest.raises(TransferError, match="the vocabularies differ"):
        check_tokenizer(trained_on(plain), lowered, "ckpt")


def test_records_without_a_hash_are_compared_by_name_and_size(tmp_path):
    hashed = prepared_with("hash", tmp_path / "hashed")
    old = without_hash(prepared_with("hash", tmp_path / "old"))
    assert "vocab_hash" not in dataset_tokenizer(old.meta)
    # An old dataset with a new model, a new dataset with an old model, old with old: same name and size.
    check_tokenizer(trained_on(hashed), old, "ckpt")
    check_tokenizer(trained_on(old), hashed, "ckpt")
    check_tokenizer(trained_on(old), old, "ckpt")
    # The old comparison still refuses what it refused, and says why it could not do better.
    other_size = ModelConfig(item_encoder="text", tokenizer={"name": "hash", "vocab_size": 65})
    with pytest.raises(
        TransferError, match=r"the model recorded no vocabulary hash.*compared by name and size"
    ):
        check_tokenizer(other_size, hashed, "ckpt")
    with pytest.raises(TransferError, match="the model and the dataset recorded no vocabulary hash"):
        check_tokenizer(other_size, old, "ckpt")


def test_a_model_without_a_tokenizer_record_accepts_any_dataset_and_text_needs_tokens(tmp_path):
    hashed = prepared_with("hash", tmp_path / "hashed")
    check_tokenizer(ModelConfig(item_encoder="text"), hashed, "ckpt")
    untokenised = prepared_with("none", tmp_path / "none")
    with pytest.raises(TransferError, match="no text tokens"):
        check_tokenizer(trained_on(hashed), untokenised, "ckpt")
