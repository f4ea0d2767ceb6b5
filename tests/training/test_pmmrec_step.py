"""How ``pmmrec_step`` wires PMMRec's four terms (eq. 12: DAP + cross-modal + NID + RCL) on one batch.

Each term is computed here from ``pmmrec_objectives`` on the inputs the paper gives it (DAP eq. 5 and
the cross-modal term eq. 6-9 on the clean sequence, NID eq. 10 and the corrupted side of RCL eq. 11 on
the corrupted one, drawn from the same random state as the step), and the step's loss must be their
weighted sum, each weight scaling its own term.
"""

from dataclasses import replace

import pytest
import torch

from transrec.data.item_content import ItemContent
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.item_encoders.multimodal import pmmrec_tiny
from transrec.models.recommender import ModelConfig, SequentialRecommender
from transrec.training import losses
from transrec.training import pmmrec_objectives as objectives
from transrec.training.batches import SequenceTrainingData, make_loader
from transrec.training.config import PMMRecLossConfig, TrainConfig
from transrec.training.step import TrainingObjective

VOCAB = 200
RANDOM_STATE = 123  # the global seed set before the step and before the hand computation alike
TERMS = ("dap", "contrastive", "nid", "rcl")
# Non-default settings throughout, so that a setting read from the wrong place changes the result.
SETTINGS = dict(variant="icl", temperature=0.2, shuffle=0.3, replace=0.25)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A model (eval mode: no dropout) and one training batch of the synthetic source."""
    root = tmp_path_factory.mktemp("pmmrec_step")
    world = make_world(SyntheticWorldConfig.tiny(seed=4, text_only_fraction=0.0, image_only_fraction=0.0))
    prep = PrepareConfig(user_k=3, item_k=3, image_size=32, image_format="raw", hash_vocab_size=VOCAB)
    dataset = prepare(world.source, prep, root / "source", progress=False)
    model_config = ModelConfig(d_model=16, max_len=8, item_encoder="mm", nid_head=True,
                               item_encoder_config=pmmrec_tiny(VOCAB),
                               user_encoder_config={"n_layers": 1, "n_heads": 2},
                               n_items=dataset.n_items, n_users=dataset.n_users)  # fmt: skip
    torch.manual_seed(0)
    model = SequentialRecommender(model_config).eval()
    with torch.no_grad():
        # Fresh weights give every user nearly the same state (RCL ~ log B whatever it reads) and a
        # classifier nearly constant after ReLU: spread them so that each term depends on its inputs.
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter), alpha=0.3)
        model.nid_classifier.bias.fill_(1.0)
    content = ItemContent(dataset, text=True, image=True)
    data = SequenceTrainingData(dataset, max_len=8, mode="s2s", n_negatives=0, content=content, seed=0)
    data.set_epoch(0)
    batch = next(iter(make_loader(data, 8, True, 0, epoch=0)))
    config = TrainConfig(dataset=str(dataset.path), output_dir=str(root / "run"), model=model_config,
                         objective="pmmrec", batch_size=8, temperature=0.5)  # fmt: skip
    return dataset, content, model, batch, config


def step_loss(setup, pmmrec: PMMRecLossConfig) -> torch.Tensor:
    """The loss the trainer computes for the batch (``TrainingObjective.loss``), from ``RANDOM_STATE``."""
    dataset, content, model, batch, config = setup
    objective = TrainingObjective(replace(config, pmmrec=pmmrec), dataset, content, torch.device("cpu"))
    torch.manual_seed(RANDOM_STATE)
    with torch.no_grad():
        return objective.loss(model, batch)


@torch.no_grad()
def terms_by_hand(setup, pmmrec: PMMRecLossConfig):
    """The four unweighted terms ``{"dap", "contrastive", "nid", "rcl"}``, each from its own function of
    ``pmmrec_objectives`` (or, for DAP over distinct items, the in-batch softmax of ``losses``); what
    two mis-wirings would compute instead; and the corruption labels ``[B, L]``."""
    _, _, model, batch, config = setup
    torch.manual_seed(RANDOM_STATE)
    corruption_seed = int(torch.randint(0, 2**62, (1,)))  # the step's one draw from the global stream
    encoded = model.item_encoder.encode(batch["items"])
    vectors = model.encode_items(batch["items"])  # [U, d], the same vectors through the public path
    table = torch.cat([vectors.new_zeros(1, vectors.shape[1]), vectors])
    clean, valid = batch["inputs_inv"] + 1, batch["valid"]
    hidden = model.user_states(table[clean], valid, batch["user_ids"])
    # The user's whole window: the input items, then the last target.
    window = torch.cat([clean, batch["targets_inv"][:, -1:] + 1], dim=1)
    window_valid = torch.cat([valid, batch["targets"][:, -1:] != 0], dim=1)
    terms = {}
    if pmmrec.dap_negatives == "slots":  # eq. 5: the state at t against the item at t + 1
        no_state = hidden.new_zeros(hidden.shape[0], 1, hidden.shape[2])  # the last item predicts nothing
        terms["dap"] = objectives.dap_loss(
            torch.cat([hidden, no_state], 1), table[window], window_valid, window
        )
    else:  # eq. 5 over the batch's distinct items, at the TrainConfig's temperature
        at = batch["targets"] != 0
        rows = at.nonzero(as_tuple=True)[0]
        terms["dap"] = losses.inbatch_softmax_loss(
            hidden[at], batch["targets_inv"][at], vectors, batch["in_history"][rows], None, config.temperature
        )
    zero = vectors.new_zeros(1, vectors.shape[1])
    text = torch.cat([zero, encoded["text_cls"]])[window]
    image = torch.cat([zero, encoded["image_cls"]])[window]
    terms["contrastive"] = objectives.cross_modal_loss(
        text, image, window_valid, pmmrec.variant, pmmrec.temperature, window
    )  # eq. 6-9
    corrupted, labels = objectives.corrupt_sequences(
        clean, valid, torch.Generator().manual_seed(corruption_seed), pmmrec.shuffle, pmmrec.replace
    )
    noisy_hidden = model.user_states(table[corrupted], valid, batch["user_ids"])
    terms["nid"] = objectives.nid_loss(
        torch.relu(model.nid_classifier(noisy_hidden)), labels, valid
    )  # eq. 10
    weights = valid.unsqueeze(-1).float()
    clean_pooled = (hidden * weights).sum(1) / weights.sum(1)  # mean over the valid positions
    noisy_pooled = (noisy_hidden * weights).sum(1) / weights.sum(1)
    terms["rcl"] = objectives.rcl_loss(clean_pooled, noisy_pooled)  # eq. 11
    # What a mis-wired step would compute instead: the checks below must be able to tell them apart.
    miswired = {
        "nid on the clean sequence": objectives.nid_loss(
            torch.relu(model.nid_classifier(hidden)), labels, valid
        ),
        "rcl without the corruption": objectives.rcl_loss(clean_pooled, clean_pooled),
    }
    return terms, miswired, labels


@pytest.mark.parametrize("dap_negatives", ["distinct", "slots"])
def test_the_loss_is_the_weighted_sum_of_the_separately_computed_terms(setup, dap_negatives):
    weights = dict(dap=0.5, contrastive=2.0, nid=3.0, rcl=0.25)
    pmmrec = PMMRecLossConfig(dap_negatives=dap_negatives, **weights, **SETTINGS)
    terms, miswired, labels = terms_by_hand(setup, pmmrec)
    # The corruption did something of both kinds, and every term is a distinct, non-trivial number,
    # so a term read from the wrong input or scaled by another term's weight cannot go unnoticed.
    assert {objectives.SHUFFLED, objectives.REPLACED} <= set(labels.unique().tolist())
    values = [float(value) for value in (*terms.values(), *miswired.values())]
    assert min(values) > 0.1
    assert min(abs(a - b) for i, a in enumerate(values) for b in values[i + 1 :]) > 1e-2
    expected = sum(weights[name] * terms[name] for name in TERMS)
    # The same operations in the same order: equal to far below the smallest mis-wiring's change.
    torch.testing.assert_close(step_loss(setup, pmmrec), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("term", TERMS)
def test_each_weight_scales_its_own_term(setup, term):
    pmmrec = PMMRecLossConfig(**{name: 0.0 for name in TERMS}, **SETTINGS)
    terms, _, _ = terms_by_hand(setup, replace(pmmrec, dap_negatives="slots"))
    for weight in (1.0, 2.5):
        alone = replace(pmmrec, dap_negatives="slots", **{term: weight})
        torch.testing.assert_close(step_loss(setup, alone), weight * terms[term], rtol=0, atol=1e-6)
