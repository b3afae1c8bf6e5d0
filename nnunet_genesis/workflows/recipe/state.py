"""``state.json``: the settings a work folder belongs to and the steps that finished there.

A work folder holds one recipe: running it again with other settings that decide the models
(``RecipeSettings.identity``) is refused before anything runs. Each finished step is recorded
with its command; a later run skips it only while the command is the same and nothing it
depends on ran again. Training is the exception: whether a fold is done is read from nnU-Net's
own files (``folders.fold_status``), which are the truth even when the state is lost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.folder_lock import FolderLock
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.run_identity import refuse_other_identity
from nnunet_genesis.workflows.recipe.folders import WorkDir
from nnunet_genesis.workflows.recipe.settings import OtherTask, RecipeSettings
from nnunet_genesis.evaluation.msd_tasks import task_for_dataset_name

STATE_VERSION = 1
LOCK_FILE = ".recipe.lock"


def read_state(work: WorkDir) -> dict[str, Any] | None:
    path = work.state_file
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise GenesisUserError(f"{path} cannot be read ({e}); delete it to start the recipe's bookkeeping afresh "
                               f"(trained folds are found again from nnU-Net's files).") from None
    if not isinstance(data, dict) or not isinstance(data.get("identity"), dict):
        raise GenesisUserError(f"{path} is not a recipe state file (no 'identity'); choose another --work-dir.")
    return data


def check_same_recipe(work: WorkDir, settings: RecipeSettings) -> None:
    """Refuse a work folder whose recipe_state.json records other model-deciding settings."""
    data = read_state(work)
    refuse_other_identity(None if data is None else data["identity"], settings.identity(), work.state_file,
                          "a recipe", "Its models and selection would be mixed with these. Re-run with the recorded "
                          "settings to continue it, or give this recipe its own --work-dir.")


class RecipeState:
    """The state file of one run: written atomically after every step."""

    def __init__(self, work: WorkDir, settings: RecipeSettings):
        self.work = work
        previous = read_state(work) or {}
        self.data: dict[str, Any] = {
            "version": STATE_VERSION,
            "identity": settings.identity(),
            "settings": settings.to_dict(),
            "started": previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%S")),
            "finished": dict(previous.get("finished", {})),
        }

    def save(self) -> None:
        write_json_atomic(self.data, self.work.state_file)

    def recorded(self, name: str, command: tuple[str, ...]) -> bool:
        entry = self.data["finished"].get(name)
        return isinstance(entry, dict) and entry.get("command") == list(command)

    def record(self, name: str, command: tuple[str, ...], seconds: float, info: Mapping[str, Any] | None = None) -> None:
        self.data["finished"][name] = {"command": list(command), "seconds": round(seconds, 2),
                                       "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **dict(info or {})}
        self.save()

    def forget(self, name: str) -> None:
        if self.data["finished"].pop(name, None) is not None:
            self.save()


def owns_output(work: WorkDir, path: Path) -> bool:
    """Whether ``path`` is the submission zip an earlier run of this work folder wrote."""
    data = read_state(work) or {}
    entry = data.get("finished", {}).get("package")
    return isinstance(entry, dict) and entry.get("output") == str(path)


def work_lock(work: WorkDir) -> FolderLock:
    """One recipe at a time in a work folder (an exclusive flock on ``.recipe.lock``)."""
    return FolderLock(work.root / LOCK_FILE, "recipe", "wait for it to end")


def finished_recipe_of_task(results: Path, task: str) -> OtherTask:
    """The finished recipe of another Decathlon task: the dataset in ``results`` named like the task,
    its default work folder, whose post-processing is recorded as finished."""

    datasets = sorted(p for p in results.glob("Dataset*") if p.is_dir()
                      and (t := task_for_dataset_name(p.name)) is not None and t.name == task)
    looked = []
    for dataset in datasets:
        work = WorkDir(dataset / "genesis_recipe")
        looked.append(str(work.root))
        data = read_state(work) or {}
        final = work.predictions / "final"
        images = (data.get("settings") or {}).get("images_ts")
        if "postprocess" in data.get("finished", {}) and images and final.is_dir():
            return OtherTask(task=task, predictions=final, images=Path(images), work_dir=work.root)
    where = f"{', '.join(looked)} has not finished its post-processing" if looked else \
        f"no dataset in {results} is named like {task}"
    raise GenesisUserError(f"--task {task}: its predictions come from that task's own finished recipe, and {where}. "
                           f"Run 'nnunet-genesis recipe -d <its dataset> -c CHECKPOINT' to the end first (its "
                           f"default --work-dir), then this command again.")
