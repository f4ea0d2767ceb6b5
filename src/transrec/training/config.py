"""The configuration of a training run (pre-training, fine-tuning and training from scratch alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transrec.config import ConfigError
from transrec.models.recommender import FREEZABLE, ModelConfig
from transrec.training.tracking import TrackingConfig


@dataclass
class OptimConfig:
    """AdamW with separate settings for the pretrained modality encoders and for the rest.

    Args:
        lr: learning rate of the user encoder, DT layers and ID tables (papers: 1e-4 to 1e-3).
        weight_decay: their weight decay (papers: 0.01-0.1).
        encoder_lr: learning rate of the text/image backbones (papers: 1e-5 to 1e-4).
        encoder_weight_decay: their weight decay.
        betas: AdamW betas.
        grad_clip: maximum global gradient norm (0: no clipping).
        warmup_steps: linear learning-rate warm-up from 0 (0: none).
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    encoder_lr: float = 1e-4
    encoder_weight_decay: float = 0.01
    betas: tuple[float, ...] = (0.9, 0.999)
    grad_clip: float = 1.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        for key in ("lr", "weight_decay", "encoder_lr", "encoder_weight_decay", "grad_clip", "warmup_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative, got {getattr(self, key)}")
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")


@dataclass
class PMMRecLossConfig:
    """Weights and settings of the ``pmmrec`` objective (PMMRec section III): DAP + CL + NID + RCL.

    Args:
        dap, contrastive, nid, rcl: weights of the four terms (fine-tuning: DAP only, the others 0).
        dap_negatives: DAP's negatives (eq. 5): ``distinct``, the batch's distinct items outside the
            user's own sequence, each once (the softmax of ``objective: inbatch``; ``logq`` and
            ``temperature`` apply), or ``slots``, every item slot of the other users as eq. 5 reads,
            so an item in ten slots is ten negatives. With repeats, popular items are pushed down
            in proportion to their popularity, which a full-ranking evaluation punishes: on the
            synthetic source (seed 1) ``slots`` reached validation NDCG@10 0.04 and ``distinct``
            0.17 (see the issue 5 note).
        variant: the cross-modal term: ``nicl`` (eq. 8-9), ``icl`` (eq. 7) or ``vcl`` (eq. 6); the
            ablations of PMMRec Table VIII.
        temperature: of the cross-modal term (on l2-normalised vectors).
        shuffle, replace: NID's corruption shares (paper: 15% and 5%).
    """

    dap: float = 1.0
    dap_negatives: Literal["distinct", "slots"] = "distinct"
    contrastive: float = 1.0
    nid: float = 1.0
    rcl: float = 1.0
    variant: Literal["nicl", "icl", "vcl"] = "nicl"
    temperature: float = 0.07
    shuffle: float = 0.15
    replace: float = 0.05


@dataclass
class CPCConfig:
    """The ``cpc`` objective (TransRec stage 2, eq. 10): per user and epoch, the user vector after the
    first n items of the training sequence against its last ``positives`` items and ``negatives`` items
    sampled uniformly outside the user's training sequence.

    Args:
        positives: l, the most recent training items used as positives (paper: 5); a user with fewer
            than l + 1 training items keeps at least one input item and has fewer positives.
        negatives: j, sampled negatives per user (paper: 4).
    """

    positives: int = 5
    negatives: int = 4

    def __post_init__(self) -> None:
        if self.positives < 1 or self.negatives < 1:
            raise ConfigError("cpc needs positives >= 1 and negatives >= 1")


@dataclass
class TrainConfig:
    """One run: data, model, objective, optimisation, evaluation, transfer.

    Args:
        dataset: prepared dataset directory (``transrec data prepare``).
        output_dir: run directory (config, metrics, checkpoints, test metrics).
        model: the architecture (``n_items``/``n_users`` are filled in from the dataset).
        mode: ``s2s`` (a loss at every position), ``s2o`` (last position only) or ``masked``
            (BERT4Rec cloze training; needs a bidirectional user encoder).
        objective: ``bce`` (sampled negatives), ``inbatch`` (softmax over the batch's distinct items,
            false negatives masked), ``full_softmax`` (over the whole catalogue) or ``pmmrec`` (PMMRec's
            DAP + cross-modal + NID + RCL, weighted by ``pmmrec``; needs the ``mm`` item encoder and
            ``model.nid_head`` for NID), ``uep`` (TransRec stage 1, eq. 8-9: softmax over the catalogue
            through ``model.uep_head``, s2s or s2o) or ``cpc`` (TransRec stage 2, eq. 10: see ``cpc``;
            mode s2o, the user vector being the last state of the first n items). The modes and keys
            each objective reads: ``training.validation.OBJECTIVES``; ``train`` refuses, before it
            reads anything, a key set to a non-default value that the run would ignore.
        pmmrec: the ``pmmrec`` objective's weights and settings.
        cpc: the ``cpc`` objective's l positives and j negatives.
        frozen: parts of the model that do not train in this run (``models.recommender.FREEZABLE``):
            ``modality_encoders`` (the pretrained text/image backbones; the DT layers above them still
            train), ``item_encoder`` (all of it), ``user_encoder``. TransRec stage 1 freezes
            ``modality_encoders``. Frozen parameters are left out of the optimizer and frozen modules
            run in eval mode.
        n_negatives: sampled negatives per position for ``bce`` (papers: 1).
        logq: popularity (logQ) correction of in-batch logits.
        temperature: softmax temperature of ``inbatch``.
        mask_prob: share of positions masked in ``masked`` mode.
        batch_size, epochs: per step and at most.
        patience: epochs without a better validation NDCG@10 before stopping early.
        eval_batch_size: users per evaluation batch.
        ks: cut-offs of the reported metrics.
        eval_subsets: subsets of the test users also reported in ``test_metrics.json``, each as
            ``"<name>/users"`` (its user count) and ``"<name>/<metric>"`` (flat keys beside the metrics of
            all users): ``all``, ``cold``, ``new``, ``warm-N`` (``evaluation.model_eval.subset_masks``;
            MoRec A.1, 4.2), e.g. ``[cold, new, warm-20]``. Validation (early stopping) uses all users.
        seed: seeds data order, negatives, masks, dropout and initialisation.
        num_workers: DataLoader worker processes.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        init_checkpoint: a model checkpoint to start from (HasPT transfer); None trains from scratch.
        init_components: which components to load from it: ``item_encoder``, ``user_encoder``, or
            ``item_encoder.text`` / ``item_encoder.image`` of a multimodal encoder (PMMRec's five
            transfer settings are ``training.checkpoint.TRANSFER_SETTINGS``).
        user_fraction: train on this share of the users (TransRec 4.3 data scaling); evaluation uses all.
        windows: which windows of each user's training sequence an epoch trains on
            (``training.batches.SequenceTrainingData``). ``last`` (the papers' default): the most recent
            ``model.max_len + 1`` training items (``max_len`` in mode masked), one window per user per
            epoch; on MovieLens-100K (about 105 interactions per user) with ``max_len: 20`` that is about
            a fifth of the data. ``all``: every window of that width ending at the user's last training
            item and every ``window_stride`` items before it, down to the first that starts at the first
            item (shorter and left-padded when the stride does not divide the length); a user with at
            most one window's worth of items has the one (padded) window of ``last``. Mode s2o trains
            only a window's last item, so its windows go on down to the first target (shorter, padded
            prefixes). Modes s2s, s2o and masked; not the cpc objective (one user vector per user,
            TransRec eq. 10) nor ``reference_path``. It composes with ``user_fraction`` (the users
            first, then their windows), DDP/FSDP (each process takes its share of the windows), the
            trunk cache and the negatives (drawn outside the user's whole training sequence, not only
            the window). RecBole instead trains on every prefix of every training sequence, truncated
            to its last ``MAX_ITEM_LIST_LENGTH`` items, with one target each (its last item): that is
            ``windows: all`` in mode s2o with ``window_stride: 1`` (its default there). Mode s2s trains
            every position of a window, so its default stride ``max_len / 2`` trains each target twice
            per epoch with about ``2 / max_len`` as many examples as RecBole (a tenth at ``max_len: 20``).
        window_stride: the stride S of ``windows: all``, at most ``model.max_len`` (None: 1 in mode s2o,
            ``max(1, model.max_len // 2)`` otherwise). In modes s2s and masked every training target is
            in a window whatever S; the default trains each s2s target about twice per epoch, once in
            the second half of a window, with at least ``max_len / 2`` items before it there, where
            ``max_len`` would train it once and the first targets of every window with almost no
            history (RecBole gives every target up to ``MAX_ITEM_LIST_LENGTH`` items of history). In
            mode s2o, S trains every S-th target.
        windows_per_user: with ``windows: all``, at most this many windows per user and epoch (None: all
            of them, about ``n / window_stride`` for n training items): the most recent window and the
            others drawn uniformly without replacement, seeded by ``(seed, epoch, user)``, so that an
            epoch stays bounded when some users have very long sequences; ``1`` trains the windows of
            ``last``.
        resume: what to do when ``output_dir`` already holds a run (``training.run_directory``):
            ``auto`` continues it from ``last/`` when its ``config.yaml`` matches this config, or
            differs only in keys that cannot change the weights (``run_directory.TRAJECTORY_FREE``:
            ``epochs``, ``patience``, the ``collapse_*`` keys, ``ks``, ``eval_batch_size``,
            ``num_workers``, ``device``, ``parallel``, ``trunk_cache``, ``trunk_cache_max_memory_mb``,
            ``output_dir``, ``tracking`` and ``tracking_config.*``), returns the stored result of a
            finished run that would train no further, and refuses any other difference, listing the
            keys; ``force`` continues despite other differences, keeping the old config as
            ``config.<n>.yaml``; ``never`` removes the run's files and trains from scratch. ``true``
            and ``false`` (older configs) mean ``auto`` and ``never``.
        collapse_factor, collapse_patience: a run whose validation NDCG@10 stays below
            ``collapse_factor`` x the NDCG@10 of a random ranking for ``collapse_patience`` evaluations
            in a row (or whose loss is not finite) is stopped and reported as collapsed.
        trunk_cache: compute the output of a frozen backbone bottom (``freeze: top_k`` or ``all``) once
            per item before training and run only the trainable top in each step
            (``models.item_encoders.trunk_cache``; same losses and gradients, to float rounding).
        trunk_cache_max_memory_mb: a larger cache is memory-mapped from ``output_dir/trunk_cache``.
        precision: ``fp32``, ``bf16`` or ``fp16`` (CUDA; dynamic loss scale) autocast of training
            steps; weights, optimizer state and evaluation stay in float32 (``training.precision``).
        parallel: how ``torchrun`` processes share the model: ``ddp`` (a whole replica each, gradients
            averaged) or ``fsdp`` (FSDP2: each holds 1/N of every parameter, gradient and AdamW moment;
            the item and user encoders are gathered whole one at a time for their forward and backward;
            ``training.fsdp``). Checkpoints, evaluation, resuming and transfer are the same with both. In
            a single process both mean plain training.
        reference_path: train as the papers' code does, for side-by-side benchmarks only
            (``training.reference``): the B x (L + 1) x 2 item slots of a batch encoded in one call,
            padding and repeats included, texts at 30 tokens, no trunk cache. Only objective bce, mode
            s2s, n_negatives 1 and the text, image or id item encoder.
        collapse_grace: a run that has never been above that level is given this many epochs to rise
            before it is called collapsed (a young run on a tiny catalogue can sit near random).
        tracking: log the run to an experiment tracker (``training.tracking``): ``tensorboard`` (event
            files), ``mlflow`` (a local file store) or ``wandb`` (offline mode), each from its extra
            (``pip install 'transrec[tracking-tensorboard]'``...); ``none`` logs nothing. The resolved
            config, every ``metrics.jsonl`` row, the test metrics and the final status; rank 0 only; a
            resumed run continues the same tracked run.
        tracking_config: where and under which names (``training.tracking.TrackingConfig``: ``dir``,
            default ``<output_dir>/tracking``; ``experiment``; ``run_name``, default the name of
            ``output_dir``; ``mlflow_uri``).
    """

    dataset: str
    output_dir: str
    model: ModelConfig = field(default_factory=ModelConfig)
    mode: Literal["s2s", "s2o", "masked"] = "s2s"
    objective: Literal["bce", "inbatch", "full_softmax", "pmmrec", "uep", "cpc"] = "bce"
    pmmrec: PMMRecLossConfig = field(default_factory=PMMRecLossConfig)
    cpc: CPCConfig = field(default_factory=CPCConfig)
    frozen: tuple[str, ...] = ()
    n_negatives: int = 1
    logq: bool = False
    temperature: float = 1.0
    mask_prob: float = 0.2
    batch_size: int = 64
    epochs: int = 50
    patience: int = 5
    eval_batch_size: int = 512
    ks: tuple[int, ...] = (5, 10, 20, 50)
    eval_subsets: tuple[str, ...] = ()
    seed: int = 42
    num_workers: int = 0
    device: str = "auto"
    init_checkpoint: str | None = None
    init_components: tuple[str, ...] = ("item_encoder", "user_encoder")
    user_fraction: float = 1.0
    windows: Literal["last", "all"] = "last"
    window_stride: int | None = None
    windows_per_user: int | None = None
    resume: Literal["auto", "force", "never"] | bool = "auto"
    collapse_factor: float = 1.5
    collapse_patience: int = 2
    collapse_grace: int = 10
    trunk_cache: bool = True
    reference_path: bool = False
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    parallel: Literal["ddp", "fsdp"] = "ddp"
    trunk_cache_max_memory_mb: float = 4096
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracking: Literal["none", "tensorboard", "mlflow", "wandb"] = "none"
    tracking_config: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.resume, bool):  # the older boolean: continue when last/ exists, or start over
            self.resume = "auto" if self.resume else "never"
        if self.resume not in ("auto", "force", "never"):
            raise ConfigError(f"resume must be auto, force or never, got {self.resume!r}")
        if not 0.0 < self.user_fraction <= 1.0:
            raise ConfigError("user_fraction must be in (0, 1]")
        if self.windows not in ("last", "all"):
            raise ConfigError(f"windows must be last or all, got {self.windows!r}")
        if self.window_stride is not None and not 1 <= self.window_stride <= self.model.max_len:
            raise ConfigError(
                f"window_stride must be within 1..model.max_len={self.model.max_len} (a larger stride "
                f"would skip training targets), got {self.window_stride}"
            )
        if self.windows_per_user is not None and self.windows_per_user < 1:
            raise ConfigError(f"windows_per_user must be at least 1 (null: all), got {self.windows_per_user}")
        for key in ("batch_size", "eval_batch_size", "epochs", "patience"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if len(set(self.ks)) != len(self.ks) or min(self.ks, default=0) < 1:
            raise ConfigError(f"ks must be distinct cut-offs of at least 1, got {list(self.ks)}")
        if self.seed < 0:
            raise ConfigError(f"seed must not be negative, got {self.seed}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0 (0: load in this process), got {self.num_workers}")
        # Which modes and keys each objective reads: training.validation.OBJECTIVES, checked by train().
        unknown = sorted(set(self.frozen) - set(FREEZABLE))
        if unknown:
            raise ConfigError(f"frozen: unknown part(s) {unknown}; parts are {', '.join(FREEZABLE)}")
        if self.objective == "bce" and self.n_negatives < 1:
            raise ConfigError("bce needs n_negatives >= 1")
        if self.mode == "masked" and self.objective == "bce" and self.n_negatives < 1:
            raise ConfigError("masked training with bce needs negatives")
