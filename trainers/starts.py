"""The registry of fine-tuning starts: how a segmentation network begins from a Genesis checkpoint.

A start is one entry of ``STARTS``: which transferred layers it keeps, resets or freezes and the
learning-rate settings it brings. Everything else is made from the registry: the nnU-Net trainer
classes of every start under every schedule (``variants``), the protocol's arms
(benchmarks/transfer_protocol.py), the recipe's plain partners and the table in docs/trainers.md
(``markdown_table``; a test keeps the page equal to it). Adding a start is one entry here and its
line in docs/trainers.md; a start that needs a new kind of change also needs the hook in
``genesis.nnUNetTrainerGenesis`` that reads its new field.

Their measured effect is in docs/benchmark_transfer.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnunet_genesis.errors import GenesisUserError

TRAINER_PREFIX = "nnUNetTrainerGenesis"
SCRATCH_TRAINER = "nnUNetTrainerScratch"  # random weights, the Genesis trainers' warm-up + poly schedule
STOCK_TRAINER = "nnUNetTrainerStock"  # random weights, nnU-Net's own schedule (the short schedule only)
# Every start and the scratch partner come in each schedule (class-name suffix; "": nnU-Net's
# 1000 epochs; the mixins are in schedule_variants.py). "demo" is the short schedule of the plans.
SCHEDULES = ("", "100epochs", "250epochs", "smoke", "demo")
SHORT_SCHEDULE = "demo"
NORM_SCOPES = ("", "last_stage", "decoder", "all")
FROZEN_PARTS = ("", "encoder", "body")


@dataclass(frozen=True)
class Start:
    """One fine-tuning start (the defaults are the papers' start)."""

    arm: str  # its short name: the benchmark's --arms value
    suffix: str  # the trainer is nnUNetTrainerGenesis_<suffix> ("": nnUNetTrainerGenesis itself)
    summary: str  # one line for docs/trainers.md
    include_decoder: bool = True  # False: the encoder (and stem) only; decoder random
    reset_norm_affine: str = ""  # normalisation layers set to scale 1, shift 0: "", "last_stage", "decoder", "all"
    reinit_last_decoder_stage: bool = False  # the highest-resolution decoder stage starts random
    frozen: str = ""  # what the optimizer skips at first: "", "encoder", "body" (all but the segmentation head)
    frozen_fraction: float = 0.0  # for this fraction of the epochs (at least one when something is frozen)
    transferred_lr_scale: float = 1.0  # the transferred layers' learning rate, as a share of the head's
    initial_lr: float | None = None  # None: nnU-Net's (1e-2)
    warmup_fraction: float | None = None  # a warm-up of its own, as a fraction of the epochs; None: the schedule's

    def __post_init__(self) -> None:
        if self.reset_norm_affine not in NORM_SCOPES:
            raise ValueError(f"start {self.arm}: reset_norm_affine must be one of {NORM_SCOPES}")
        if self.frozen not in FROZEN_PARTS or (self.frozen == "") != (self.frozen_fraction == 0):
            raise ValueError(f"start {self.arm}: frozen must be one of {FROZEN_PARTS}, with a frozen_fraction "
                             f"in (0, 1) exactly when something is frozen")
        if not 0 < self.transferred_lr_scale <= 1:
            raise ValueError(f"start {self.arm}: transferred_lr_scale must be in (0, 1]")

    @property
    def trainer(self) -> str:
        """Its trainer's name under nnU-Net's default schedule."""
        return f"{TRAINER_PREFIX}_{self.suffix}" if self.suffix else TRAINER_PREFIX

    @property
    def own_schedule(self) -> bool:
        """Whether it changes the learning-rate schedule (then no scratch trainer shares its schedule)."""
        return self.initial_lr is not None or self.warmup_fraction is not None

    def frozen_epochs(self, num_epochs: int) -> int:
        """How many epochs the frozen part stays frozen (0: nothing is frozen)."""
        return max(1, int(round(self.frozen_fraction * num_epochs))) if self.frozen else 0

    def warmup_epochs(self, num_epochs: int) -> int | None:
        """Its own warm-up length, or None when the schedule's applies."""
        return None if self.warmup_fraction is None else max(1, int(round(self.warmup_fraction * num_epochs)))

    def changes(self) -> str:
        """What it does differently from the default start, for the docs table."""
        parts = [] if self.include_decoder else ["encoder and stem only"]
        if self.reset_norm_affine:
            parts.append(f"norm affine reset ({self.reset_norm_affine})")
        if self.reinit_last_decoder_stage:
            parts.append("last decoder stage random")
        if self.frozen:
            parts.append(f"{self.frozen} frozen for {self.frozen_fraction:g} of the epochs")
        if self.transferred_lr_scale != 1:
            parts.append(f"transferred layers at {self.transferred_lr_scale:g} x LR")
        if self.initial_lr is not None:
            parts.append(f"LR {self.initial_lr:g}")
        if self.warmup_fraction is not None:
            parts.append(f"warm-up {self.warmup_fraction:g} of the epochs")
        return ", ".join(parts) or "-"


STARTS: tuple[Start, ...] = (
    Start("genesis", "", "The papers' start (the default): encoder, stem and decoder as restoration left them; "
                         "only the segmentation head random."),
    Start("aspretrained", "asPretrained", "The default start under its own name."),
    Start("encoder", "encoderOnly", "The encoder (and stem) only; decoder and head random.", include_decoder=False),
    Start("resetdecodernorm", "resetDecoderNorm", "The whole network, the decoder's normalisation layers reset.",
          reset_norm_affine="decoder"),
    Start("resetlastnorm", "resetLastNorm", "The whole network, the last decoder stage's normalisation layers reset.",
          reset_norm_affine="last_stage"),
    Start("resetallnorm", "resetAllNorm", "The whole network, every normalisation layer reset, encoder included.",
          reset_norm_affine="all"),
    Start("reinitlast", "reinitLastStage", "The whole network, the highest-resolution decoder stage re-initialised.",
          reinit_last_decoder_stage=True),
    Start("headwarmup", "headWarmup", "Linear probing, then fine-tuning: only the segmentation head trains at first.",
          frozen="body", frozen_fraction=0.1),
    Start("freezeencoder", "freezeEncoder", "The whole network, the encoder frozen at first.",
          frozen="encoder", frozen_fraction=0.05),
    Start("lowlr", "lowLR", "The transferred layers learn at a tenth of the head's learning rate.",
          transferred_lr_scale=0.1),
    Start("nnunetrecipe", "nnUNetRecipe", "nnU-Net's recipe for pretrained weights: encoder only, a lower learning "
                                          "rate, a long linear warm-up.",
          include_decoder=False, initial_lr=1e-3, warmup_fraction=0.2),
)
DEFAULT_START = STARTS[0]


def trainer_name(base: str, schedule: str) -> str:
    """``base`` under ``schedule`` (a class-name suffix of ``SCHEDULES``)."""
    return f"{base}_{schedule}" if schedule else base


def genesis_trainers() -> dict[str, tuple[Start, str]]:
    """Every Genesis trainer's name -> its start and schedule."""
    return {trainer_name(s.trainer, schedule): (s, schedule) for s in STARTS for schedule in SCHEDULES}


def scratch_partner(trainer: str) -> str | None:
    """The trainer with ``trainer``'s schedule from random weights; None for a trainer not made from the
    registry, or a start with a learning-rate schedule of its own (no scratch trainer shares it)."""
    found = genesis_trainers().get(trainer)
    if found is None or found[0].own_schedule:
        return None
    return trainer_name(SCRATCH_TRAINER, found[1])


def start_named(arm: str) -> Start:
    """The start of an arm name (``--arms``)."""
    for start in STARTS:
        if start.arm == arm:
            return start
    raise GenesisUserError(f"No fine-tuning start is called {arm!r}; the starts are {', '.join(s.arm for s in STARTS)} "
                           f"(docs/trainers.md).")


def markdown_table() -> str:
    """The table of starts in docs/trainers.md."""
    rows = ["| start (`--arms`) | trainer | what it changes | summary |", "|---|---|---|---|"]
    rows += [f"| `{s.arm}` | `{s.trainer}` | {s.changes()} | {s.summary} |" for s in STARTS]
    return "\n".join(rows)
