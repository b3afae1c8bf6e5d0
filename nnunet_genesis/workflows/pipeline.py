"""Running the pipeline's commands as resumable, logged steps (used by the demo and benchmarks).

A *workspace* is one output folder holding its own ``nnUNet_raw``, ``nnUNet_preprocessed``
and ``nnUNet_results``, so a demo never touches the user's nnU-Net folders. Every command
runs as a subprocess with the workspace's environment (and ``nnUNet_extTrainer`` pointing at
this package's trainers); its output goes to a log file under ``logs/``.

A *step* is finished when its marker ``state/<name>.json`` exists (written atomically after
the step's outputs are complete, with its duration). Running the pipeline again skips
finished steps; an unfinished step first removes its partial outputs and then runs from the
start. That is what makes an interrupted run safe to repeat.

Independent steps can be grouped as ``Parallel``: they run at the same time, each pinned to its
own share of the CPUs (``pinned_jobs``), and a failure or a stop of one stops the others.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, Union

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.environment import NNUNET_FOLDERS, environment_for_nnunet
from nnunet_genesis.pinned_jobs import raise_if_stopped, run_pinned

def remove(paths: Iterable[Path]) -> None:
    """Delete files and folders (partial outputs of an unfinished step)."""
    for p in paths:
        p = Path(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def command_path(name: str) -> str:
    """An installed console script: next to this Python first (the venv), then on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise GenesisUserError(f"The command {name} was not found next to {sys.executable} or on PATH; "
                               f"is nnunetv2 installed in this environment?")
    return found


def genesis_command(*args: str) -> list[str]:
    """``nnunet-genesis ARGS`` with this interpreter (works without the venv on PATH)."""
    return [sys.executable, "-m", "nnunet_genesis.cli", *args]


class Workspace:
    """An output folder with its own nnU-Net folders (``raw``, ``preprocessed``, ``results``),
    ``logs`` and step markers (``state``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.raw, self.preprocessed, self.results = (self.root / name for name in NNUNET_FOLDERS)
        self.logs, self.state = self.root / "logs", self.root / "state"

    def make(self) -> None:
        for p in (self.raw, self.preprocessed, self.results, self.logs, self.state):
            p.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        """Environment of every subprocess: this workspace's nnU-Net folders and the trainers."""

        env = environment_for_nnunet()
        env.update({name: str(folder) for name, folder in
                    zip(NNUNET_FOLDERS, (self.raw, self.preprocessed, self.results))})
        env["PYTHONUNBUFFERED"] = "1"
        # nnU-Net's validation/export pools default to 8 spawned processes, each importing torch:
        # minutes of start-up on a small machine. Half the cores (at least 1) unless the user chose.
        env.setdefault("nnUNet_def_n_proc", str(max(1, min(8, (os.cpu_count() or 1) // 2))))
        # OpenMP threads that spin while waiting make PyTorch on the CPU several times slower as
        # soon as anything else runs on the machine (measured: 4x to 10x on 2 shared cores).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return env

    def marker(self, step: str) -> Path:
        return self.state / f"{step}.json"

    def is_done(self, step: str) -> bool:
        return self.marker(step).is_file()

    def mark_done(self, step: str, seconds: float, info: Mapping | None = None) -> None:
        write_json_atomic({"step": step, "seconds": round(seconds, 2), **(info or {})}, self.marker(step))

    def done_info(self, step: str) -> dict:
        return json.loads(self.marker(step).read_text())


class StepFailed(GenesisUserError):
    """A pipeline command exited non-zero; the message names its log and shows the tail."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=1)


def _last_line(log: Path, limit: int = 60) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [l.strip() for l in text.replace("\r", "\n").splitlines() if l.strip()]
    return lines[-1][:limit] if lines else ""


def log_tail(log: Path, n: int = 25) -> str:
    """The last ``n`` non-empty lines of a log (progress-bar carriage returns split into lines)."""
    try:
        lines = [l for l in log.read_text(errors="replace").replace("\r", "\n").splitlines() if l.strip()]
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])[-4000:]


def stop_process_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM to ``proc``'s process group; after ``grace`` seconds SIGKILL to whatever of the group
    is left (the command itself, or workers it left behind)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_logged(cmd: Sequence[str], log: Path, env: Mapping[str, str], status: Callable[[str], None] | None = None,
               cwd: Path | None = None) -> None:
    """Run ``cmd``, appending its stdout+stderr to ``log``; raise StepFailed on a non-zero exit.

    ``status`` is called about once a second with the log's last line (for a progress display).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"$ {' '.join(str(c) for c in cmd)}\n")
        out.flush()
        # its own process group, so that a stop reaches what it started too (nnU-Net's data workers)
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=dict(env),
                                cwd=str(cwd) if cwd else None, start_new_session=True)
        try:
            while True:
                try:
                    code = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    if status is not None:
                        status(_last_line(log))
        except BaseException:
            stop_process_group(proc)
            raise
    if code != 0:
        raise StepFailed(f"Command failed with exit code {code}: {' '.join(str(c) for c in cmd)}\n"
                         f"Full log: {log}\nLast lines:\n{log_tail(log)}")


def dataset_name_for(raw: Path, dataset_id: int) -> str:
    """``DatasetXXX_Name`` of an id inside a workspace's ``raw`` (exactly one must exist).

    Not nnU-Net's ``maybe_convert_to_dataset_name``: that searches the nnU-Net folders of this
    process's environment, and a workspace's folders are set only for its commands."""
    matches = sorted(p.name for p in raw.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())
    if len(matches) != 1:
        raise GenesisUserError(f"Expected one dataset with id {dataset_id} in {raw}, found {matches or 'none'}.")
    return matches[0]


def results_folder(results: Path, dataset_name: str, trainer: str, plans: str, configuration: str) -> Path:
    """nnU-Net's results folder of a (trainer, plans, configuration) under a workspace's
    ``results`` (``get_output_folder`` would use the ``nnUNet_results`` of this process)."""
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

    return results / dataset_name / convert_trainer_plans_config_to_identifier(trainer, plans, configuration)


def format_seconds(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s"


class StepDisplay:
    """Step lines with timings plus, on a terminal, a live status line (tqdm)."""

    def __init__(self, total: int, title: str):
        from tqdm import tqdm

        self.total = total
        self.index = 0
        self.lanes: dict[str, str] = {}  # the last log line of each step running now, by its log's name
        self.lock = threading.Lock()
        self.bar = tqdm(total=total, desc=title, unit="step", dynamic_ncols=True, disable=None,
                        bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}] {postfix}")

    def write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text)

    def start(self, *labels: str) -> list[int]:
        """Steps starting now (several: side by side); returns their numbers."""
        with self.lock:
            numbers = list(range(self.index + 1, self.index + 1 + len(labels)))
            self.index += len(labels)
            self.lanes = {}
            first = f"{numbers[0]}" if len(numbers) == 1 else f"{numbers[0]}-{numbers[-1]}"
            self.bar.set_description_str(f"[{first}/{self.total}] {' | '.join(labels)}")
            self.bar.set_postfix_str("", refresh=True)
        return numbers

    def status(self, text: str, lane: str | None = None) -> None:
        with self.lock:
            self.lanes[lane or ""] = text
            if len(self.lanes) <= 1:
                shown = text[:60]
            else:
                shown = " | ".join(line[:40] for line in self.lanes.values())
            self.bar.set_postfix_str(shown, refresh=True)

    def finish(self, number: int, label: str, seconds: float, skipped: bool = False) -> None:
        how = "done earlier, skipped" if skipped else format_seconds(seconds)
        with self.lock:
            self.write(f"[{number:>2}/{self.total}] {label:<52} {how}")
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


@dataclass
class Step:
    """One resumable step: ``run()`` makes ``outputs``; ``partial`` is removed before a (re)run."""

    name: str
    label: str
    run: Callable[["StepContext"], Mapping | None]
    partial: Callable[[], Iterable[Path]] = lambda: ()


@dataclass
class Parallel:
    """Independent steps that run side by side, each pinned to its own share of the CPUs.

    On a small CPU machine two single-threaded trainings finish sooner together than one after
    the other with two threads each (docs/demo.md gives the figures). ``jobs`` 1 runs them in order.
    """

    steps: Sequence[Step]
    jobs: int = 2


@dataclass
class StepContext:
    workspace: Workspace
    display: StepDisplay
    log: Path
    cpus: str | None = None  # ``taskset -c`` CPU list of a step running side by side with others
    stop: threading.Event | None = field(default=None, repr=False)  # set: stop this step's command

    def command(self, cmd: Sequence[str], extra_env: Mapping[str, str] | None = None) -> None:
        env = self.workspace.env()
        env.update(extra_env or {})
        pin = ["taskset", "-c", self.cpus] if self.cpus else []

        def status(line: str) -> None:
            raise_if_stopped(self.stop)  # another step of its group failed or was stopped
            self.display.status(line, self.log.stem)

        # run in the workspace: `python -m` puts the working directory first on sys.path, and a
        # source checkout there (benchmarks are run from one) would shadow the installed package
        run_logged([*pin, *cmd], self.log, env, status=status, cwd=self.workspace.root)


def side_by_side_jobs(wanted: int) -> int:
    """How many steps of a ``Parallel`` group may run at once here: at most one per CPU, and one
    when the CPUs cannot be shared out (no ``taskset``, no CPU affinity)."""
    if wanted <= 1 or shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity"):
        return 1
    return max(1, min(wanted, len(os.sched_getaffinity(0))))


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run_one(workspace: Workspace, step: Step, number: int, display: StepDisplay,
             cpus: str | None = None, stop: threading.Event | None = None) -> float:
    """Run one unfinished step and write its marker; returns its duration."""
    remove(step.partial())
    log = workspace.logs / f"{number:02d}_{step.name}.log"
    if log.exists():  # an earlier, unfinished attempt: keep its log, mark the new start
        with open(log, "a") as f:
            f.write(f"\n===== step restarted {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
    t0, cpu0 = time.monotonic(), _cpu_seconds()
    info = step.run(StepContext(workspace, display, log, cpus, stop)) or {}
    seconds = time.monotonic() - t0
    # CPU time of this process and its commands: a load-independent measure of the work (for
    # steps side by side it includes the other steps' commands that ended meanwhile).
    cpu = round(_cpu_seconds() - cpu0, 2)
    extra = {"cpus": cpus} if cpus else {}
    workspace.mark_done(step.name, seconds, {"cpu_seconds": cpu, "log": str(log), **extra, **dict(info)})
    return seconds


StepOrGroup = Union[Step, Parallel]


def count_steps(items: Sequence[StepOrGroup]) -> int:
    return sum(len(item.steps) if isinstance(item, Parallel) else 1 for item in items)


@dataclass
class StepTimes:
    """Each step's duration (from its marker if it was skipped), and the wall-clock time all of
    them took together: a ``Parallel`` group counts once, by its longest step."""

    seconds: dict[str, float]
    wall: float


def run_steps(workspace: Workspace, items: Sequence[StepOrGroup], title: str) -> StepTimes:
    """Run the unfinished steps in order, the steps of a ``Parallel`` group side by side."""
    display = StepDisplay(count_steps(items), title)
    durations: dict[str, float] = {}
    wall = 0.0
    try:
        for item in items:
            group = list(item.steps) if isinstance(item, Parallel) else [item]
            numbers = display.start(*(step.label for step in group))
            todo = []
            for number, step in zip(numbers, group):
                if workspace.is_done(step.name):
                    durations[step.name] = float(workspace.done_info(step.name).get("seconds", 0.0))
                    display.finish(number, step.label, durations[step.name], skipped=True)
                else:
                    todo.append((number, step))
            jobs = side_by_side_jobs(item.jobs) if isinstance(item, Parallel) else 1
            if jobs <= 1 or len(todo) <= 1:
                for number, step in todo:
                    durations[step.name] = _run_one(workspace, step, number, display)
                    display.finish(number, step.label, durations[step.name])
            else:
                def work(entry, cpus, stop):
                    return _run_one(workspace, entry[1], entry[0], display, cpus, stop)

                for (number, step), seconds, _ in run_pinned(todo, min(jobs, len(todo)), work):
                    durations[step.name] = seconds
                    display.finish(number, step.label, seconds)
            wall += (max(durations[s.name] for s in group) if jobs > 1 and len(todo) > 1
                     else sum(durations[s.name] for s in group))
    finally:
        display.close()
    return StepTimes(durations, wall)
