import pytest
import torch

from transrec.data.tokenize import build_tokenizer
from transrec.models.item_encoders import build_item_encoder, minilm_top_blocks
from transrec.models.item_encoders.text import masked_mean

from .builders import VOCAB, D, items, text_config


@pytest.mark.parametrize("pooling", ["cls", "mean", "attention"])
def test_every_pooling_gives_one_vector_per_item(pooling):
    encoder = build_item_encoder("text", D, 10, text_config(pooling=pooling))
    out = encoder(items([3, 5, 1]))
    assert out.shape == (3, D) and torch.isfinite(out).all()


@pytest.mark.parametrize("pooling", ["cls", "mean", "attention"])
def test_tokens_beyond_the_attention_mask_change_nothing(pooling):
    torch.manual_seed(0)
    encoder = build_item_encoder("text", D, 10, text_config(pooling=pooling)).eval()
    batch = items([2, 5, 3])
    scrambled = items([2, 5, 3])
    scrambled.input_ids = torch.where(
        batch.attention_mask.bool(), batch.input_ids, torch.randint(1, VOCAB, (3, 5))
    )
    assert not torch.equal(scrambled.input_ids, batch.input_ids)
    torch.testing.assert_close(encoder(scrambled), encoder(batch))


def test_mean_pooling_of_a_padded_batch_equals_each_item_alone():
    torch.manual_seed(0)
    encoder = build_item_encoder("text", D, 10, text_config(pooling="mean")).eval()
    batch = items([2, 5, 3])
    together = encoder(batch)
    for u in range(3):
        alone = encoder(batch.select(torch.tensor([u])))  # trimmed to its own length: no padding at all
        torch.testing.assert_close(together[u : u + 1], alone, rtol=1e-5, atol=1e-5)


def test_an_item_without_text_is_refused_with_a_count():
    encoder = build_item_encoder("text", D, 10, text_config())
    with pytest.raises(ValueError, match=r"1 of 3 items have no text"):
        encoder(items([3, 0, 2]))


def test_token_ids_outside_the_vocabulary_are_refused():
    encoder = build_item_encoder("text", D, 10, text_config())
    batch = items([3, 2])
    batch.input_ids[0, 0] = VOCAB
    with pytest.raises(ValueError, match="outside the text backbone's vocabulary"):
        encoder(batch)


def test_a_local_checkpoint_directory_loads_the_saved_weights(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)  # fmt: skip
    saved = BertModel(config).eval()
    saved.save_pretrained(tmp_path / "bert")
    encoder = build_item_encoder("text", D, 10, {"pretrained": str(tmp_path / "bert")}).eval()
    batch = items([4, 2])
    states, _ = encoder.token_states(batch)
    expected = saved(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    torch.testing.assert_close(states, expected)
    assert encoder.backbone.model.pooler is None  # never used by any pooling here, so not trained either

    fresh = build_item_encoder("text", D, 10, {"pretrained": str(tmp_path / "bert"), "random_init": True})
    assert not torch.equal(fresh.backbone.model.encoder.layer[0].output.dense.weight,
                           saved.encoder.layer[0].output.dense.weight)  # fmt: skip


def test_a_missing_checkpoint_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_item_encoder("text", D, 10, {"pretrained": str(tmp_path / "nowhere")})


def test_packaged_minilm_loads_its_pretrained_weights():
    tokenizer = build_tokenizer("minilm")
    texts = ["a funny comedy film", "a hilarious comedy movie", "quarterly stock market report"]
    ids = tokenizer.encode_batch(texts, max_length=16)
    width = max(map(len, ids))
    batch = items([len(row) for row in ids])
    batch.input_ids = torch.tensor([row + [tokenizer.pad_id] * (width - len(row)) for row in ids])
    encoder = build_item_encoder("text", D, 10, minilm_top_blocks(2)).eval()

    assert len(encoder.backbone.model.encoder.layer) == 6
    trainable = {
        name.split(".")[2] for name, p in encoder.backbone.model.named_parameters() if p.requires_grad
    }
    assert trainable == {"4", "5"}  # encoder.layer.{4,5}.*: the top two of six blocks
    assert encoder(batch).shape == (3, D)
    pooled = torch.nn.functional.normalize(masked_mean(*encoder.token_states(batch)), dim=-1)
    # Sentence-embedding weights put the two comedy titles far closer than the finance one.
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.3


@pytest.mark.parametrize("pooling", ["cls", "mean", "attention"])
def test_length_buckets_give_the_vectors_and_gradients_of_one_padded_batch(pooling):
    lengths = [(7 * u) % 19 + 1 for u in range(100)]  # 1..19 tokens, shuffled
    batch = items(lengths)
    results = []
    for buckets in (1, 4):
        torch.manual_seed(0)
        encoder = build_item_encoder(
            "text", D, 10, text_config(pooling=pooling, length_buckets=buckets)
        ).eval()
        out = encoder(batch)
        out.square().sum().backward()
        results.append(
            (out.detach(), {n: p.grad for n, p in encoder.named_parameters() if p.grad is not None})
        )
    (plain, plain_grads), (bucketed, bucketed_grads) = results
    torch.testing.assert_close(bucketed, plain, rtol=1e-5, atol=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(bucketed_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
