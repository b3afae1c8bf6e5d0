"""Every trainer class of the package, made from the registry of starts and the schedules.

For each start of ``starts.STARTS`` and each schedule of ``starts.SCHEDULES``:
``nnUNetTrainerGenesis[_<start>][_<schedule>]``; the partners that start from random weights
with the identical schedule, ``nnUNetTrainerScratch[_<schedule>]``; and ``nnUNetTrainerStock_demo``
(nnU-Net's own optimizer and poly schedule, for the plans' short schedule). A class is a
schedule mixin over a start's class, which only sets ``start`` on ``nnUNetTrainerGenesis``:
the behaviour lives in the hooks of ``genesis.py`` and ``schedule_variants.py``.

nnU-Net finds a trainer by its class name in the modules of the ``nnUNet_extTrainer`` folder;
``trainers/ext`` re-exports everything in ``__all__``.
"""

from __future__ import annotations

from nnunet_genesis.trainers.genesis import (nnUNetTrainerGenesis, nnUNetTrainerSafeLoading, nnUNetTrainerScratch,
                                             nnUNetTrainerWarmupPoly)
from nnunet_genesis.trainers.schedule_variants import SCHEDULE_MIXINS, PlansScheduleMixin
from nnunet_genesis.trainers.starts import (SCHEDULES, SCRATCH_TRAINER, SHORT_SCHEDULE, STARTS, STOCK_TRAINER,
                                            trainer_name)

if set(SCHEDULE_MIXINS) != set(SCHEDULES):
    raise ImportError(f"schedule_variants.SCHEDULE_MIXINS {sorted(SCHEDULE_MIXINS)} must cover starts.SCHEDULES "
                      f"{sorted(SCHEDULES)}")


def _trainer_class(name: str, bases: tuple[type, ...], doc: str, **attributes) -> type:
    return type(name, bases, {"__module__": __name__, "__qualname__": name, "__doc__": doc, **attributes})


def _with_schedules(base: type, doc: str) -> dict[str, type]:
    """``base`` under every schedule (the schedule's mixin first, as nnU-Net's variants subclass)."""
    classes = {}
    for schedule in SCHEDULES:
        mixin = SCHEDULE_MIXINS[schedule]
        name = trainer_name(base.__name__, schedule)
        classes[name] = base if mixin is None else _trainer_class(
            name, (mixin, base), f"{doc} Schedule: {mixin.__doc__.strip().splitlines()[0]}")
    return classes


def _all_trainers() -> dict[str, type]:
    trainers: dict[str, type] = {"nnUNetTrainerWarmupPoly": nnUNetTrainerWarmupPoly}
    for start in STARTS:
        base = nnUNetTrainerGenesis if start.trainer == nnUNetTrainerGenesis.__name__ else \
            _trainer_class(start.trainer, (nnUNetTrainerGenesis,), start.summary, start=start)
        trainers.update(_with_schedules(base, start.summary))
    assert nnUNetTrainerScratch.__name__ == SCRATCH_TRAINER
    trainers.update(_with_schedules(nnUNetTrainerScratch, "Random initialisation, the Genesis trainers' schedule."))
    stock = trainer_name(STOCK_TRAINER, SHORT_SCHEDULE)
    trainers[stock] = _trainer_class(stock, (PlansScheduleMixin, nnUNetTrainerSafeLoading),
                                     "Stock nnU-Net (its SGD and poly schedule, no warm-up) for the plans' short "
                                     "schedule.")
    return trainers


TRAINERS: dict[str, type] = _all_trainers()
globals().update(TRAINERS)  # module attributes, so that nnU-Net (by name) and pickle (by qualname) find them
__all__ = sorted(TRAINERS)
