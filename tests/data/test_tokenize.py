import pytest

from transrec.data.tokenize import HashTokenizer, HFTokenizer, build_tokenizer, minilm_path, tokenize_texts


def test_hash_tokenizer_is_stable_and_shared_across_instances():
    a, b = HashTokenizer(vocab_size=1000), HashTokenizer(vocab_size=1000)
    assert a.encode_batch(["Toy Story!"], 8) == b.encode_batch(["toy story !"], 8)
    ids = a.encode_batch(["Toy Story!"], 8)[0]
    assert ids[0] == 1 and ids[-1] == 2 and len(ids) == 5
    assert all(4 <= i < 1000 for i in ids[1:-1])
    assert len(a.encode_batch(["w " * 50], 6)[0]) == 6  # truncated, [SEP] kept


def test_tokenize_texts_pads_and_leaves_empty_texts_empty():
    tokens, lengths = tokenize_texts(HashTokenizer(), ["one two", "", "three"], max_length=5)
    assert tokens.shape == (3, 5) and lengths.tolist() == [4, 0, 3]
    assert tokens[1].tolist() == [0] * 5 and tokens[2, 3:].tolist() == [0, 0]


def test_hf_tokenizer_from_a_local_directory(tmp_path):
    import tokenizers  # the [text] extra, installed by the test setup

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "toy": 4, "story": 5}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = build_tokenizer(str(tmp_path))
    assert isinstance(loaded, HFTokenizer) and loaded.pad_id == 0 and loaded.vocab_size == 6
    assert loaded.encode_batch(["toy story alien"], 10) == [[2, 4, 5, 1, 3]]
    assert loaded.encode_batch(["toy story alien"], 3) == [[2, 4, 3]]


def test_packaged_minilm_tokenizer():
    assert (minilm_path() / "tokenizer.json").is_file()  # installed by the test setup (Makefile)
    tokenizer = build_tokenizer("minilm")
    ids = tokenizer.encode_batch(["Toy Story (1995)"], 16)[0]
    assert ids[0] == 101 and ids[-1] == 102  # BERT [CLS] ... [SEP]
    assert tokenizer.vocab_size == 30522 and tokenizer.pad_id == 0


def test_unknown_tokenizer_spec():
    with pytest.raises(ValueError, match="neither hash, minilm, none"):
        build_tokenizer("no/such/dir")


def save_tokenizer(directory, padding=False):
    import tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "toy": 4, "story": 5}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    if padding:
        tok.enable_padding(pad_id=0, pad_token="[PAD]", length=12)
    directory.mkdir()
    tok.save(str(directory / "tokenizer.json"))
    return str(directory)


def test_vocab_hash_ignores_padding_and_where_the_file_is(tmp_path):
    plain = build_tokenizer(save_tokenizer(tmp_path / "plain"))
    padded = build_tokenizer(save_tokenizer(tmp_path / "padded", padding=True))
    assert (tmp_path / "plain" / "tokenizer.json").read_text() != (
        tmp_path / "padded" / "tokenizer.json"
    ).read_text()
    assert plain.vocab_hash == padded.vocab_hash  # transrec never pads in the tokenizer: the same ids
    assert plain.encode_batch(["toy story"], 8) == padded.encode_batch(["toy story"], 8)


def test_hash_tokenizer_vocab_hash_follows_its_size():
    assert HashTokenizer(vocab_size=1000).vocab_hash == HashTokenizer(vocab_size=1000).vocab_hash
    assert HashTokenizer(vocab_size=1000).vocab_hash != HashTokenizer(vocab_size=1001).vocab_hash


def test_vocab_hashes_are_stable_across_releases():
    # Prepared datasets and checkpoints record these; a change of the digest would make every dataset
    # prepared before it refuse every model trained after it. Change them only on purpose.
    assert (
        HashTokenizer().vocab_hash
        == "sha256:5bae8593bee0fcd9beec19b4fd7a029e61c98393e332c88086f94c4cb4c46350"
    )
    minilm = "sha256:31d2340967bbbd56959daba5fd4367a711c570ef4b21702a6b28ac7c3c4fc8d9"
    assert build_tokenizer("minilm").vocab_hash == minilm
