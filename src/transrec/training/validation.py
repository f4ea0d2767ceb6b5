"""One validation step for a training run: before any data is read or any weight is built, refuse a
config that sets what the run would ignore, or lacks what it needs.

``validate_config(config)`` runs first in ``training.trainer.train`` and in ``transrec train`` right
after the config is loaded. It raises one ``ConfigError`` listing every problem; each names the dotted
key, why this run would not use it, and what would, e.g.

    logq=true is ignored by objective bce: only objectives inbatch and pmmrec (with pmmrec.dap > 0
    and pmmrec.dap_negatives=distinct) use it

A key counts as set when its value differs from the default of its dataclass (``TrainConfig``,
``ModelConfig``, or the encoder's own config class): writing a default explicitly is never an error.
The rules are data, in four tables; adding an objective is adding a row to ``OBJECTIVES``.

``OBJECTIVES``: per ``objective``, the modes it trains, the keys it reads (some only under a condition;
read from ``training.step``, ``pmmrec_step``, ``transrec_step`` and the trainer's ``n_negatives``) and
what it needs. A key that one objective reads is ignored by the others:

    key                 read by
    n_negatives         bce (cpc draws cpc.negatives; the softmax objectives draw none)
    logq, temperature   inbatch; pmmrec with pmmrec.dap > 0 and pmmrec.dap_negatives=distinct
    reference_path      bce in mode s2s with n_negatives=1 and item encoder text, image or id
                        (the papers' step that ``reference_path`` reproduces for the benchmark)
    pmmrec.*            pmmrec
    model.nid_head      pmmrec with pmmrec.nid > 0
    cpc.*               cpc
    model.uep_head      uep (any other objective would leave the head untrained, yet rank through it)

    objective     modes            needs
    bce           s2s s2o masked
    inbatch       s2s s2o masked
    full_softmax  s2s s2o masked
    pmmrec        s2s              model.nid_head when pmmrec.nid > 0; item encoder mm when
                                   pmmrec.contrastive > 0
    uep           s2s s2o          model.uep_head
    cpc           s2o

``RULES``: the other keys that a run reads only under a condition:

    key                        read when
    mask_prob                  mode masked
    pmmrec.dap_negatives       pmmrec.dap > 0
    pmmrec.variant,
    pmmrec.temperature         pmmrec.contrastive > 0 (the cross-modal term)
    pmmrec.shuffle,
    pmmrec.replace             pmmrec.nid > 0 or pmmrec.rcl > 0 (the corrupted sequence)
    init_components            init_checkpoint is set
    frozen: modality_encoders  the item encoder has a trainable text/image backbone (not id, not
                               every backbone at freeze: all)
    optim.encoder_lr,
    optim.encoder_weight_decay a backbone trains: one with freeze none or top_k, and frozen names
                               neither modality_encoders nor item_encoder (``build_optimizer``)
    model.feature_dim          model.user_features or model.item_features is set
    trunk_cache: false         the item encoder has a frozen trunk (freeze: top_k or all) to cache
    trunk_cache_max_memory_mb  a trunk cache is built (trunk_cache, a frozen trunk, no reference_path)
    windows                    modes s2s, s2o, masked: not objective cpc (one user vector per user,
                               TransRec eq. 10), not reference_path (the papers' one window per user)
    window_stride,
    windows_per_user           windows=all
    tracking_config.dir,
    tracking_config.run_name   tracking is not none
    tracking_config.experiment tracking mlflow or wandb (TensorBoard has no experiment)
    tracking_config.mlflow_uri tracking mlflow

``ENCODER_RULES``: fields of the ``model.*_encoder_config`` dicts, checked against the encoder's own
config dataclass wherever such a config sits (``text`` alone, inside ``mom``/``mm``, or
``id_modality``'s ``modality_config``):

    field                                  read when
    text: attention_heads                  pooling attention
    mm: fusion_heads, fusion_dropout       fusion merge_attention
    mean_pool, dssm: dropout               n_layers > 0 (dropout sits before each MLP layer)

``NEEDS``: what every run needs: mode masked and a masked-item user encoder (bert4rec) go together;
``ks`` contains 10 (validation NDCG@10 drives early stopping and collapse detection); ``precision:
fp16`` needs a CUDA device; ``eval_subsets`` are known subset names (all, cold, new, warm-N).

Unknown encoder names and unknown encoder config keys are refused here too, before anything is built.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from transrec.config import ConfigError, from_dict
from transrec.evaluation.model_eval import parse_subset
from transrec.models.item_encoders import ITEM_ENCODERS
from transrec.models.item_encoders.freezing import FreezeConfig
from transrec.models.item_encoders.id_modality import IDModalityConfig
from transrec.models.item_encoders.multimodal import MultimodalEncoderConfig
from transrec.models.item_encoders.text import TextEncoderConfig
from transrec.models.recommender import ModelConfig
from transrec.models.user_encoders import USER_ENCODERS
from transrec.models.user_encoders.dssm import DSSMConfig
from transrec.models.user_encoders.mean_pool import MeanPoolConfig
from transrec.training.config import TrainConfig

Predicate = Callable[[TrainConfig], bool]


@dataclass(frozen=True)
class Reads:
    """An objective reads ``key`` (a dotted key, or a block such as ``pmmrec``: all its fields), always or
    only when ``when`` holds, which ``condition`` says in words."""

    key: str
    when: Predicate | None = None
    condition: str = ""


@dataclass(frozen=True)
class Need:
    """Whenever ``when`` holds (None: always; in an ``Objective`` row, only under that objective),
    ``holds`` must: else ``message``, which names ``key``. ``example``: dotted overrides of a config that
    breaks it (for the docs and the tests)."""

    key: str
    holds: Predicate
    message: str
    when: Predicate | None = None
    example: tuple[str, ...] = ()


@dataclass(frozen=True)
class Objective:
    """A row of ``OBJECTIVES``: the modes the objective trains (``modes_reason`` says why), the keys it
    reads, what it needs; ``example``: dotted overrides of a smallest valid config with it."""

    name: str
    modes: tuple[str, ...]
    modes_reason: str
    reads: tuple[Reads, ...] = ()
    needs: tuple[Need, ...] = ()
    example: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """``key`` is read only when ``applies``; set while it does not, it is an error naming
    ``ignored_by(config)`` and ``used_by``. ``is_set`` defaults to "differs from its default".
    ``example``: dotted overrides of a config the rule refuses (for the docs and the tests)."""

    key: str
    applies: Predicate
    ignored_by: Callable[[TrainConfig], str]
    used_by: str
    example: tuple[str, ...]
    is_set: Predicate | None = None


@dataclass(frozen=True)
class EncoderRule:
    """Field ``field`` of an encoder config of class ``config_class`` is read only when ``applies`` (on
    that typed config); otherwise a non-default value is an error, like ``Rule``."""

    config_class: type
    field: str
    applies: Callable[[Any], bool]
    ignored_by: Callable[[Any], str]
    used_by: str
    example: tuple[str, ...]


def _dap_distinct(config: TrainConfig) -> bool:
    return config.pmmrec.dap > 0 and config.pmmrec.dap_negatives == "distinct"


def _papers_path(config: TrainConfig) -> bool:
    """What the papers' step (``TrainingObjective`` with ``reference_path``) reproduces: MoRec/NineRec's
    BCE in S2S with one negative per position, over one item encoder of a single modality (or ids)."""
    return (
        config.mode == "s2s"
        and config.n_negatives == 1
        and config.model.item_encoder in ("text", "image", "id")
    )


_DISTINCT = "pmmrec.dap > 0 and pmmrec.dap_negatives=distinct"
#: What a user who set an objective's key under another objective may be looking for.
KEY_NOTES = {
    "n_negatives": "cpc draws cpc.negatives",
    "model.uep_head": "under any other objective the head never trains, yet evaluation ranks every item "
    "through it",
}

OBJECTIVES: dict[str, Objective] = {
    row.name: row
    for row in (
        Objective(
            "bce", ("s2s", "s2o", "masked"), "scores sampled negatives at the target positions",
            reads=(Reads("n_negatives"),
                   Reads("reference_path", _papers_path,
                         "mode s2s, n_negatives=1 and item encoder text, image or id")),
            example=("objective=bce",),
        ),
        Objective(
            "inbatch", ("s2s", "s2o", "masked"), "scores the batch's items at the target positions",
            reads=(Reads("logq"), Reads("temperature")),
            example=("objective=inbatch",),
        ),
        Objective(
            "full_softmax", ("s2s", "s2o", "masked"), "scores the catalogue at the target positions",
            example=("objective=full_softmax",),
        ),
        Objective(
            "pmmrec", ("s2s",), "trains next-item prediction (DAP, PMMRec eq. 5)",
            reads=(Reads("pmmrec"), Reads("logq", _dap_distinct, _DISTINCT),
                   Reads("temperature", _dap_distinct, _DISTINCT),
                   Reads("model.nid_head", lambda c: c.pmmrec.nid > 0, "pmmrec.nid > 0")),
            needs=(
                Need("model.nid_head", lambda c: c.model.nid_head,
                     "the pmmrec NID term (pmmrec.nid > 0) needs model.nid_head=true (or set pmmrec.nid=0)",
                     when=lambda c: c.pmmrec.nid > 0,
                     example=("objective=pmmrec", "model.item_encoder=mm")),
                Need("model.item_encoder", lambda c: c.model.item_encoder == "mm",
                     "the pmmrec cross-modal term (pmmrec.contrastive > 0) needs the mm item encoder "
                     "(model.item_encoder=mm: text and image per item), or set pmmrec.contrastive=0",
                     when=lambda c: c.pmmrec.contrastive > 0,
                     example=("objective=pmmrec", "model.nid_head=true")),
            ),
            example=("objective=pmmrec", "model.item_encoder=mm", "model.nid_head=true"),
        ),
        Objective(
            "uep", ("s2s", "s2o"), "predicts the next item left to right (TransRec eq. 8-9)",
            reads=(Reads("model.uep_head"),),
            needs=(Need("model.uep_head", lambda c: c.model.uep_head,
                        "the uep objective needs model.uep_head=true (TransRec eq. 8's W^U, b^U)",
                        example=("objective=uep",)),),
            example=("objective=uep", "model.uep_head=true"),
        ),
        Objective(
            "cpc", ("s2o",), "scores one user vector, the last state (TransRec eq. 10)",
            reads=(Reads("cpc"),),
            example=("objective=cpc", "mode=s2o"),
        ),
    )
}  # fmt: skip


# -- what an item encoder config holds, found without building anything -------------------------------
def encoder_configs(model: ModelConfig) -> Iterator[tuple[str, Any]]:
    """``(dotted key, typed config)`` of every encoder config of ``model``: the item and user encoders'
    own and each nested one (``mom``/``mm``'s ``text`` and ``image``, ``id_modality``'s modality).
    Raises ConfigError for unknown encoder names and unknown or wrongly typed config keys."""
    for kind, registry, name, raw in (
        ("item", ITEM_ENCODERS, model.item_encoder, model.item_encoder_config),
        ("user", USER_ENCODERS, model.user_encoder, model.user_encoder_config),
    ):
        try:
            cls = registry.get(name)
        except KeyError as err:
            raise ConfigError(f"model.{kind}_encoder: {err.args[0]}") from None
        key = f"model.{kind}_encoder_config"
        yield from _nested(key, from_dict(cls.config_class, raw, prefix=key + "."))


def _nested(key: str, config: Any) -> Iterator[tuple[str, Any]]:
    yield key, config
    if isinstance(config, IDModalityConfig):  # the one encoder whose config holds another's as a dict
        try:
            cls = ITEM_ENCODERS.get(config.modality)
        except KeyError as err:
            raise ConfigError(f"{key}.modality: {err.args[0]}") from None
        inner = f"{key}.modality_config"
        yield from _nested(inner, from_dict(cls.config_class, config.modality_config, prefix=inner + "."))
        return
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from _nested(f"{key}.{field.name}", value)


def backbones(model: ModelConfig) -> list[FreezeConfig]:
    """The freeze settings of the item encoder's pretrained text/image backbones (none for ``id``)."""
    configs = (c for key, c in encoder_configs(model) if key.startswith("model.item_encoder_config"))
    return [c for c in configs if isinstance(c, FreezeConfig)]


def _trainable_backbone(config: TrainConfig) -> bool:
    return any(b.freeze != "all" for b in backbones(config.model))


def _frozen_trunk(config: TrainConfig) -> bool:
    return any(b.freeze in ("top_k", "all") for b in backbones(config.model))


def _no_trainable_backbone(config: TrainConfig) -> str:
    if not backbones(config.model):
        return f"item encoder {config.model.item_encoder}, which has no pretrained backbone"
    return "an item encoder whose backbones all have freeze: all already"


def _no_cache(config: TrainConfig) -> str:
    if not config.trunk_cache:
        return "trunk_cache=false"
    if config.reference_path:
        return "reference_path=true, which never caches"
    return "an item encoder without a frozen trunk"


def _one_window(config: TrainConfig) -> str:
    if config.objective == "cpc":
        return "objective cpc, which scores one user vector per user (TransRec eq. 10)"
    return "reference_path=true, which trains the papers' one window per user"


def _trains_backbones(config: TrainConfig) -> bool:
    """Whether ``build_optimizer`` has an ``encoder`` group: backbone parameters that still train."""
    return _trainable_backbone(config) and not {"modality_encoders", "item_encoder"} & set(config.frozen)


def _no_backbone_trains(config: TrainConfig) -> str:
    if not _trainable_backbone(config):
        return _no_trainable_backbone(config)
    part = next(p for p in ("item_encoder", "modality_encoders") if p in config.frozen)
    return f"frozen: [{part}], which keeps every backbone out of the optimizer"


def _user_encoder(config: TrainConfig) -> type:
    return USER_ENCODERS.get(config.model.user_encoder)


def _pmmrec_term(flag: str) -> Callable[[TrainConfig], str]:
    return lambda c: f"objective pmmrec with {flag}"


RULES: tuple[Rule, ...] = (
    Rule("mask_prob", lambda c: c.mode == "masked", lambda c: f"mode {c.mode}", "only mode masked uses it",
         example=("mask_prob=0.3",)),
    Rule("pmmrec.dap_negatives", lambda c: c.objective != "pmmrec" or c.pmmrec.dap > 0,
         _pmmrec_term("pmmrec.dap=0"), "only the DAP term (pmmrec.dap > 0) uses it",
         example=(*OBJECTIVES["pmmrec"].example, "pmmrec.dap=0", "pmmrec.dap_negatives=slots")),
    *(
        Rule(key, lambda c: c.objective != "pmmrec" or c.pmmrec.contrastive > 0,
             _pmmrec_term("pmmrec.contrastive=0"),
             "only the cross-modal term (pmmrec.contrastive > 0) uses it",
             example=(*OBJECTIVES["pmmrec"].example, "pmmrec.contrastive=0", f"{key}={value}"))
        for key, value in (("pmmrec.variant", "icl"), ("pmmrec.temperature", 0.2))
    ),
    *(
        Rule(key, lambda c: c.objective != "pmmrec" or c.pmmrec.nid > 0 or c.pmmrec.rcl > 0,
             _pmmrec_term("pmmrec.nid=0 and pmmrec.rcl=0"),
             "only the NID and RCL terms (pmmrec.nid > 0 or pmmrec.rcl > 0) use it",
             example=(*OBJECTIVES["pmmrec"].example, "model.nid_head=false", "pmmrec.nid=0", "pmmrec.rcl=0",
                      f"{key}=0.3"))
        for key in ("pmmrec.shuffle", "pmmrec.replace")
    ),
    Rule("init_components", lambda c: c.init_checkpoint is not None, lambda c: "init_checkpoint=null",
         "only init_checkpoint (the checkpoint the components are loaded from) uses it",
         example=("init_components=[user_encoder]",)),
    Rule("frozen", _trainable_backbone, _no_trainable_backbone,
         "only an item encoder with a trainable text/image backbone (text, image, mom, mm, id_modality; "
         "freeze none or top_k) uses it",
         example=("frozen=[modality_encoders]",), is_set=lambda c: "modality_encoders" in c.frozen),
    *(
        Rule(key, _trains_backbones, _no_backbone_trains,
             "only the optimizer group of trainable text/image backbones uses it",
             example=("model.item_encoder=text", "frozen=[modality_encoders]", f"{key}=0.5"))
        for key in ("optim.encoder_lr", "optim.encoder_weight_decay")
    ),
    Rule("model.feature_dim", lambda c: bool(c.model.user_features or c.model.item_features),
         lambda c: "a model without side features (model.user_features and model.item_features empty)",
         "only side features use it", example=("model.feature_dim=8",)),
    Rule("trunk_cache", _frozen_trunk, lambda c: "an item encoder without a frozen trunk",
         "only an item encoder with a frozen backbone trunk (freeze: top_k or all) uses it",
         example=("trunk_cache=false",)),
    Rule("trunk_cache_max_memory_mb", lambda c: c.trunk_cache and not c.reference_path and _frozen_trunk(c),
         _no_cache, "only a frozen-trunk cache (trunk_cache=true, freeze: top_k or all, no reference_path) "
         "uses it", example=("trunk_cache_max_memory_mb=64",)),
    Rule("windows", lambda c: c.objective != "cpc" and not c.reference_path, _one_window,
         "only modes s2s, s2o and masked without reference_path use it",
         example=("objective=cpc", "mode=s2o", "windows=all")),
    *(
        Rule(key, lambda c: c.windows == "all", lambda c: "windows=last", "only windows=all uses it",
             example=(f"{key}=3",))
        for key in ("window_stride", "windows_per_user")
    ),
    *(
        Rule(f"tracking_config.{name}", lambda c: c.tracking != "none", lambda c: "tracking=none",
             "only a tracking backend (tracking: tensorboard, mlflow or wandb) uses it",
             example=(f"tracking_config.{name}={value}",))
        for name, value in (("dir", "runs/tracking"), ("run_name", "baseline"))
    ),
    Rule("tracking_config.experiment", lambda c: c.tracking in ("mlflow", "wandb"),
         lambda c: f"tracking={c.tracking}",
         "only tracking mlflow (the experiment) and wandb (the project) use it; TensorBoard names a run by "
         "its log dir (tracking_config.run_name)",
         example=("tracking=tensorboard", "tracking_config.experiment=grid")),
    Rule("tracking_config.mlflow_uri", lambda c: c.tracking == "mlflow", lambda c: f"tracking={c.tracking}",
         "only tracking mlflow uses it",
         example=("tracking=wandb", "tracking_config.mlflow_uri=sqlite:///mlflow.db")),
)  # fmt: skip

ENCODER_RULES: tuple[EncoderRule, ...] = (
    EncoderRule(TextEncoderConfig, "attention_heads", lambda t: t.pooling == "attention",
                lambda t: f"pooling {t.pooling}", "only pooling attention uses it",
                example=("model.item_encoder=text", "model.item_encoder_config.attention_heads=4")),
    *(
        EncoderRule(MultimodalEncoderConfig, name, lambda m: m.fusion == "merge_attention",
                    lambda m: f"fusion {m.fusion}", "only fusion merge_attention uses it",
                    example=("model.item_encoder=mm", "model.item_encoder_config.fusion=sum",
                             f"model.item_encoder_config.{name}={value}"))
        for name, value in (("fusion_heads", 4), ("fusion_dropout", 0.3))
    ),
    *(
        EncoderRule(cls, "dropout", lambda u: u.n_layers > 0, lambda u: "n_layers=0",
                    "only the MLP layers (n_layers > 0) use it",
                    example=(f"model.user_encoder={name}", "model.user_encoder_config.n_layers=0",
                             "model.user_encoder_config.dropout=0.3"))
        for cls, name in ((MeanPoolConfig, "mean_pool"), (DSSMConfig, "dssm"))
    ),
)  # fmt: skip

NEEDS: tuple[Need, ...] = (
    # The user encoder's class attributes: what ``trainer.check_mode`` checks once the model is built.
    Need("model.user_encoder", lambda c: c.mode != "masked" or _user_encoder(c).masked_training,
         "mode=masked needs a masked-item user encoder (model.user_encoder=bert4rec)",
         example=("mode=masked",)),
    Need("model.user_encoder", lambda c: c.mode == "masked" or not _user_encoder(c).masked_training,
         "a masked-item user encoder (model.user_encoder=bert4rec) is trained by masked-item prediction: "
         "use mode=masked",
         example=("model.user_encoder=bert4rec",)),
    Need("ks", lambda c: 10 in c.ks,
         "ks must include 10: validation NDCG@10 drives early stopping, the best checkpoint and collapse "
         "detection", example=("ks=[5, 20]",)),
    Need("eval_subsets", lambda c: all(_is_subset_name(name) for name in c.eval_subsets),
         "eval_subsets: each must be all, cold, new or warm-N with N >= 1 (model_eval.subset_masks)",
         example=("eval_subsets=[cold, warm-0]",)),
    Need("precision", lambda c: _device_type(c.device) == "cuda",
         "precision fp16 needs a CUDA device (its loss scaler is CUDA's); use bf16 or fp32 on a CPU",
         when=lambda c: c.precision == "fp16", example=("precision=fp16", "device=cpu")),
)  # fmt: skip


def _is_subset_name(name: str) -> bool:
    try:
        parse_subset(name)
    except ValueError:
        return False
    return True


def _device_type(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(device).type
    except RuntimeError as err:
        raise ConfigError(f"device: {device!r} is not a device ({err})") from None


# -- the check ---------------------------------------------------------------------------------------
_DEFAULTS = TrainConfig(dataset="", output_dir="")


def validate_config(config: TrainConfig) -> None:
    """Raise ``ConfigError`` listing every problem of ``config`` (see the module docstring); reads no
    file and builds no weight."""
    problems = config_problems(config)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(
            f"{len(problems)} problems in the config:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def config_problems(config: TrainConfig) -> list[str]:
    """Every problem ``validate_config`` would report, one sentence each, in table order."""
    encoders = list(encoder_configs(config.model))  # unknown names and keys stop here, with their key
    objective = OBJECTIVES.get(config.objective)
    if objective is None:
        return [f"objective: unknown objective {config.objective!r}; known: {', '.join(OBJECTIVES)}"]
    problems = []
    if config.mode not in objective.modes:
        problems.append(f"mode={config.mode} does not fit objective {objective.name}, which "
                        f"{objective.modes_reason}: use mode {' or '.join(objective.modes)}")  # fmt: skip
    for need in (*objective.needs, *NEEDS):
        if (need.when is None or need.when(config)) and not need.holds(config):
            problems.append(need.message)
    problems += _objective_keys(config, objective)
    for rule in RULES:
        if not rule.applies(config):
            ignored_by = rule.ignored_by(config)
            problems += [
                _ignored(key, value, ignored_by, rule.used_by) for key, value in _rule_keys(config, rule)
            ]
    for key, typed in encoders:
        for rule in ENCODER_RULES:
            if isinstance(typed, rule.config_class) and not rule.applies(typed):
                value = getattr(typed, rule.field)
                if value != _field_default(rule.config_class, rule.field):
                    problems.append(
                        _ignored(f"{key}.{rule.field}", value, rule.ignored_by(typed), rule.used_by)
                    )
    return problems


def _objective_keys(config: TrainConfig, objective: Objective) -> list[str]:
    """The keys some objective reads that this run's objective does not (or not under its condition)."""
    own = {r.key: r for r in objective.reads}
    keys = dict.fromkeys(r.key for row in OBJECTIVES.values() for r in row.reads)
    problems = []
    for key in keys:
        mine = own.get(key)
        if mine is not None and (mine.when is None or mine.when(config)):
            continue
        ignored_by = f"objective {objective.name}"
        if mine is not None:
            ignored_by += f" unless {mine.condition}"
        for dotted, value in _set_keys(config, key):
            problems.append(_ignored(dotted, value, ignored_by, _readers(key)))
    return problems


def _readers(key: str) -> str:
    """What reads ``key``, e.g. "only objectives inbatch and pmmrec (with ...) use it"."""
    names = [
        row.name + (f" (with {r.condition})" if r.condition else "")
        for row in OBJECTIVES.values()
        for r in row.reads
        if r.key == key
    ]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    said = f"only objective {listed} uses it" if len(names) == 1 else f"only objectives {listed} use it"
    return said + (f" ({KEY_NOTES[key]})" if key in KEY_NOTES else "")


def _ignored(key: str, value: Any, ignored_by: str, used_by: str) -> str:
    return f"{key}={_show(value)} is ignored by {ignored_by}: {used_by}"


def _show(value: Any) -> str:
    """A value as YAML/JSON writes it (true, 0.5, "mean", ["a"]), as the user typed it."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def _get(config: Any, key: str) -> Any:
    for part in key.split("."):
        config = getattr(config, part)
    return config


def _rule_keys(config: TrainConfig, rule: Rule) -> list[tuple[str, Any]]:
    if rule.is_set is None:
        return _set_keys(config, rule.key)
    return [(rule.key, _get(config, rule.key))] if rule.is_set(config) else []


def _set_keys(config: TrainConfig, key: str) -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of what differs from the default under ``key``: the key itself, or for a
    block (a dataclass such as ``pmmrec``) each of its fields that differs."""
    value, default = _get(config, key), _get(_DEFAULTS, key)
    if dataclasses.is_dataclass(value):
        return [
            (f"{key}.{f.name}", getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) != getattr(default, f.name)
        ]
    return [] if value == default else [(key, value)]


def _field_default(cls: type, name: str) -> Any:
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    return field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
