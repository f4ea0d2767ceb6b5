"""Checkpoints of runs and transfer loading.

A run keeps two checkpoint directories (Hugging Face convention, never pickle):
``best/`` (``config.json`` + ``model.safetensors``, the model with the best validation NDCG@10) and
``last/`` (``model/`` as ``best/``, ``optimizer.safetensors`` and ``trainer_state.json``), rewritten
atomically after every epoch, from which a killed run resumes. Both hold whole tensors, also when FSDP
trained the model sharded (``model_state`` and ``optimizer_tensors`` gather them), so they load anywhere.
The optimizer state is keyed by parameter name (``"<parameter>.exp_avg"``...), and restored by name, so a
change in what trains is refused instead of loading moments into other tensors.

Transfer loads a source checkpoint into a new model *by component* (``item_encoder``,
``user_encoder``): every key of a loaded component must match by name and shape, and a mismatch raises
``TransferError`` naming the keys. The source optimizer state is never read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from transrec.data.prepared import PreparedDataset
from transrec.errors import UserError
from transrec.models.recommender import (
    WEIGHTS_FILE,
    ModelConfig,
    SequentialRecommender,
    dataset_tokenizer,
    read_model_config,
    tokenizer_mismatch,
    write_pretrained,
)
from transrec.training.fsdp import sharded_like, whole
from transrec.utils.io import atomic_directory

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
#: Version of the optimizer state in ``last/``: 2 keys it by parameter name (1, by position, is refused).
OPTIMIZER_FORMAT = 2
TENSOR = "<tensor>"  # marks a state entry stored in the safetensors file
COMPONENTS = ("item_encoder", "user_encoder")
#: Parts of a multimodal item encoder (``mm``, ``mom``) that load on their own: PMMRec's text-only and
#: vision-only transfer settings.
SUBCOMPONENTS = ("item_encoder.text", "item_encoder.image")
#: PMMRec section III-E, Table V: the five transfer settings as ``init_components``.
TRANSFER_SETTINGS = {
    "full": ("item_encoder", "user_encoder"),
    "item_encoders": ("item_encoder",),
    "user_encoder": ("user_encoder",),
    "text": ("item_encoder.text",),
    "vision": ("item_encoder.image",),
}


class TransferError(UserError, ValueError):
    """A source checkpoint cannot be loaded into the target model as asked."""


class CheckpointError(UserError, ValueError):
    """A run's ``last/`` cannot be resumed into the model and optimizer being trained."""


def check_tokenizer(source: ModelConfig, dataset: PreparedDataset, checkpoint: str | Path) -> None:
    """Refuse to apply a text model to a dataset tokenised with another tokenizer (its token ids would
    index other words of the embedding table): ``tokenizer_mismatch`` compares the vocabulary hashes, or
    name and size for records without one. Checkpoints that do not record a tokenizer pass."""
    problem = tokenizer_mismatch(source.tokenizer, dataset_tokenizer(dataset.meta))
    if problem is not None:
        raise TransferError(
            f"{checkpoint} was trained on text tokenised with another vocabulary than {dataset.path}'s: "
            f"{problem}; prepare the dataset again with tokenizer={source.tokenizer['name']}"
        )


def model_state(model: nn.Module, keep: bool = True) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as whole tensors on the CPU. Under FSDP every process must call this (each
    tensor is gathered from its shards, one at a time); processes without ``keep`` get ``{}``."""
    state = {}
    for name, value in model.state_dict().items():
        value = whole(value.detach())
        if keep:
            state[name] = value.contiguous().cpu()
    return state


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load whole tensors (a checkpoint's) into ``model``, sharded by FSDP or not (no communication)."""
    current = model.state_dict()
    model.load_state_dict({k: sharded_like(v, current[k]) if k in current else v for k, v in state.items()})


def save_model(directory: Path, config: ModelConfig, state: dict[str, torch.Tensor]) -> None:
    """Write ``state`` (``model_state``) as ``SequentialRecommender.save_pretrained`` writes a model, so
    that a model trained sharded saves in the same format, from one process."""
    write_pretrained(directory, config, state)


def parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """The qualified name (``model.named_parameters()``) of every parameter the optimizer holds, group by
    group. Raises CheckpointError when the optimizer holds a parameter that is not ``model``'s."""
    names = {id(p): name for name, p in model.named_parameters()}
    groups = [[names.get(id(p), "") for p in group["params"]] for group in optimizer.param_groups]
    if any("" in group for group in groups):
        raise CheckpointError("the optimizer holds parameters that are not the model's; cannot name them")
    return groups


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, model: nn.Module, keep: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer state keyed by parameter *name* (``model``'s qualified names): whole tensors
    ``"<parameter>.<state key>"`` (for safetensors) and JSON-able metadata, the groups as lists of names
    and each parameter's non-tensor state. Under FSDP every process must call this (the moments are
    gathered); processes without ``keep`` get no tensors."""
    groups = parameter_names(model, optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    names = [name for group in groups for name in group]
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {
        "format": OPTIMIZER_FORMAT,
        "param_groups": [
            {**{k: v for k, v in group.items() if k != "params"}, "params": group_names}
            for group, group_names in zip(optimizer.param_groups, groups, strict=True)
        ],
        "shapes": {name: list(p.shape) for name, p in zip(names, params, strict=True)},
        "state": {},
    }
    for name, param in zip(names, params, strict=True):
        if param not in optimizer.state:  # AdamW has no state for a parameter before its first gradient
            continue
        entry = {}
        for key, value in optimizer.state[param].items():
            if torch.is_tensor(value):
                value = whole(value.detach())
                if keep:
                    tensors[f"{name}.{key}"] = value.contiguous().cpu()
                entry[key] = TENSOR
            else:
                entry[key] = value
        meta["state"][name] = entry
    return tensors, meta


def restore_optimizer(
    optimizer: torch.optim.Optimizer, model: nn.Module, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    """Load what ``optimizer_tensors`` saved into the parameters of the same *names*, whatever their order;
    a sharded parameter's moments are cut to its shard. The hyper-parameters (learning rates, weight
    decays) stay those the optimizer was built with, from the current config.

    Raises CheckpointError, naming the parameters, when the saved state is of the old positional format,
    or when a parameter is missing on either side, sits in another group (``name``) or has another shape:
    moments must never be loaded into other tensors than their own."""
    check_optimizer_format(meta)
    groups = parameter_names(model, optimizer)
    saved = {name: group.get("name", str(k)) for k, group in enumerate(meta["param_groups"])
             for name in group["params"]}  # fmt: skip
    current = {name: group.get("name", str(k)) for k, group in enumerate(optimizer.param_groups)
               for name in groups[k]}  # fmt: skip
    names = [name for group in groups for name in group]
    params = dict(zip(names, [p for group in optimizer.param_groups for p in group["params"]], strict=True))
    problems = {
        "trained now but not in the checkpoint": sorted(set(current) - set(saved)),
        "in the checkpoint but not trained now": sorted(set(saved) - set(current)),
        "in another parameter group": sorted(n for n in set(saved) & set(current) if saved[n] != current[n]),
        "of another shape": sorted(
            f"{n} (saved {tuple(meta['shapes'][n])}, now {tuple(params[n].shape)})"
            for n in set(saved) & set(current)
            if list(params[n].shape) != list(meta["shapes"][n])
        ),
    }
    if any(problems.values()):
        raise CheckpointError(
            "the optimizer state of last/ does not fit the parameters being trained (a change in what is "
            "frozen, in the parameter groups or in the model): "
            + "; ".join(f"{label}: {_some(names)}" for label, names in problems.items() if names)
        )
    index = {name: k for k, name in enumerate(names)}
    state = {
        index[name]: {
            key: sharded_like(tensors[f"{name}.{key}"], params[name]) if value == TENSOR else value
            for key, value in entry.items()
        }
        for name, entry in meta["state"].items()
    }
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def check_optimizer_format(meta: dict[str, Any], where: object = "this last/") -> None:
    """Refuse (CheckpointError) optimizer metadata of another format than ``OPTIMIZER_FORMAT``."""
    if meta.get("format") != OPTIMIZER_FORMAT:
        raise CheckpointError(
            f"the optimizer state in {where} was saved by parameter position (an older transrec), which "
            "cannot be matched to parameters safely; train in a new output_dir, or with resume=never to "
            "start this one again from scratch"
        )


def _some(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def save_last(
    directory: Path,
    config: ModelConfig,
    weights: dict[str, torch.Tensor],
    optimizer: tuple[dict[str, torch.Tensor], dict[str, Any]],
    trainer_state: dict,
) -> None:
    """Write ``last/`` atomically: the model's weights (``model_state``), the optimizer state
    (``optimizer_tensors``) and the trainer's counters."""
    tensors, meta = optimizer
    with atomic_directory(directory) as tmp:
        save_model(tmp / "model", config, weights)
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        (tmp / STATE_FILE).write_text(json.dumps({"optimizer": meta, "trainer": trainer_state}, indent=1))


def read_trainer_state(directory: Path) -> dict[str, Any]:
    """The trainer's counters saved in ``last/`` (``epoch``, ``step``, ``best``, ``bad_epochs``...): a small
    JSON read, no tensor."""
    return json.loads((Path(directory) / STATE_FILE).read_text())["trainer"]


def load_last_weights(directory: Path, model: nn.Module) -> None:
    """Restore the model's weights from ``last/``."""
    load_model_state(model, load_file(str(directory / "model" / WEIGHTS_FILE)))


def load_last_optimizer(
    directory: Path, optimizer: torch.optim.Optimizer, model: nn.Module
) -> dict[str, Any]:
    """Restore the optimizer state from ``last/`` by parameter name (``restore_optimizer``); returns the
    trainer state saved with it."""
    saved = json.loads((directory / STATE_FILE).read_text())
    restore_optimizer(optimizer, model, load_file(str(directory / OPTIMIZER_FILE)), saved["optimizer"])
    return saved["trainer"]


def load_components(
    model: SequentialRecommender, checkpoint: str | Path, components: tuple[str, ...] | list[str] = COMPONENTS
) -> dict[str, list[str]]:
    """Load ``components`` of ``model`` from the checkpoint directory ``checkpoint`` (HasPT transfer).

    Returns the loaded keys per component. Raises TransferError when the checkpoint is missing, the
    model sizes differ, a component is not transferable (an ID item table belongs to its catalogue),
    or any key is missing, unexpected or of another shape, naming those keys.
    """
    checkpoint = Path(checkpoint)
    if not (checkpoint / WEIGHTS_FILE).is_file():
        raise TransferError(f"{checkpoint} is not a model checkpoint (no {WEIGHTS_FILE})")
    unknown = [c for c in components if c not in COMPONENTS + SUBCOMPONENTS]
    if unknown:
        raise TransferError(
            f"unknown component(s) {unknown}; components are {', '.join(COMPONENTS + SUBCOMPONENTS)}"
        )
    overlapping = [c for c in components if any(c != o and c.startswith(o + ".") for o in components)]
    if overlapping:
        raise TransferError(f"{overlapping} are already part of another component asked for")
    source_config = read_model_config(checkpoint)
    if source_config.d_model != model.config.d_model:
        raise TransferError(
            f"d_model differs: checkpoint {source_config.d_model}, model {model.config.d_model}"
        )
    if any(c.startswith("item_encoder") for c in components) and not model.item_encoder.transferable:
        raise TransferError(
            f"the {model.config.item_encoder!r} item encoder is tied to its catalogue's ids and cannot be "
            "transferred; load only the user encoder (init_components=[user_encoder])"
        )
    source = load_file(str(checkpoint / WEIGHTS_FILE))
    target = model.state_dict()
    loaded: dict[str, list[str]] = {}
    for component in components:
        prefix = component + "."
        theirs = {k: v for k, v in source.items() if k.startswith(prefix)}
        ours = {k: v for k, v in target.items() if k.startswith(prefix)}
        if not ours:
            raise TransferError(
                f"the model has no {component} (its item encoder is {model.config.item_encoder!r})"
            )
        missing = sorted(set(ours) - set(theirs))
        unexpected = sorted(set(theirs) - set(ours))
        shapes = sorted(k for k in set(ours) & set(theirs) if ours[k].shape != theirs[k].shape)
        if missing or unexpected or shapes:
            raise TransferError(
                f"{component} of {checkpoint} does not fit the model: "
                + "; ".join(
                    f"{label}: {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"
                    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
                    if keys
                )
            )
        with torch.no_grad():
            for key, value in theirs.items():
                target[key].copy_(value)
        loaded[component] = sorted(theirs)
    return loaded


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str | Path | PreparedDataset,
    stage: str = "test",
    ks: tuple[int, ...] = (5, 10, 20, 50),
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    exclude_history: bool = True,
    subsets: tuple[str, ...] = (),
    per_user: str | Path | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of a saved model on a prepared dataset: the source's own test set, or another
    platform's (zero-shot transfer: no weight is updated). Raises TransferError when the model cannot
    apply to that dataset (ID items or a UEP head of another catalogue, text tokenised otherwise), and
    ``FeatureError`` when the dataset lacks a side feature the model uses.

    ``exclude_history``, ``subsets``: as ``evaluation.model_eval.evaluate_model`` (``"<subset>/users"``
    and ``"<subset>/<metric>"`` keys); ``per_user``: also write every user's target, rank and subset
    flags to this Parquet file (``Evaluation.write_per_user``)."""
    from transrec.utils.packages import import_optional

    if per_user is not None:
        import_optional("pyarrow", "a per-user Parquet table (--per-user)")  # before the evaluation runs
    evaluation = checkpoint_evaluation(checkpoint, dataset, stage, ks, device, batch_size, exclude_history,
                                       subsets)  # fmt: skip
    if per_user is not None:
        evaluation.write_per_user(per_user)
    return evaluation.metrics


def checkpoint_evaluation(
    checkpoint: str | Path,
    dataset: str | Path | PreparedDataset,
    stage: str = "test",
    ks: tuple[int, ...] = (5, 10, 20, 50),
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    exclude_history: bool = True,
    subsets: tuple[str, ...] = (),
):
    """:func:`evaluate_checkpoint` with every user's rank kept: the ``evaluation.model_eval.Evaluation``
    (``metrics``, ``users``, ``targets``, ``ranks``, ``subsets``), after the same checks."""
    from transrec.data.item_content import ItemContent
    from transrec.evaluation.model_eval import evaluate_model_detailed, parse_subset

    for name in subsets:
        parse_subset(name)  # before the checkpoint is read
    data = dataset if isinstance(dataset, PreparedDataset) else PreparedDataset(dataset)
    model = SequentialRecommender.from_pretrained(checkpoint, map_location=device)
    if not model.item_encoder.transferable and model.config.n_items != data.n_items:
        raise TransferError(
            f"{checkpoint} scores the item IDs of another catalogue ({model.config.n_items} items, "
            f"{data.path} has {data.n_items}); an ID model cannot be applied to a new platform"
        )
    if model.uep_head is not None and model.config.n_items != data.n_items:
        raise TransferError(
            f"{checkpoint} ranks through a UEP head over another catalogue ({model.config.n_items} items, "
            f"{data.path} has {data.n_items}); evaluate the stage-2 model, or train one from it"
        )
    model.attach_features(data)
    if model.item_encoder.needs_text:
        check_tokenizer(model.config, data, checkpoint)
    content = ItemContent(data, text=model.item_encoder.needs_text, image=model.item_encoder.needs_image)
    return evaluate_model_detailed(
        model, data, content, stage, ks, batch_size, torch.device(device), exclude_history, subsets=subsets
    )
