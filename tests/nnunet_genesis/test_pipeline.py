import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnunet_genesis.workflows.pipeline import (Parallel, Step, StepContext, StepDisplay, StepFailed, Workspace,
                                               genesis_command, run_steps, side_by_side_jobs)


def test_commands_run_in_the_workspace_so_a_source_checkout_cannot_shadow_the_package(tmp_path, monkeypatch):
    # a folder that looks like a source checkout: nnunet_genesis/ without the mapped subpackages
    checkout = tmp_path / "checkout"
    (checkout / "nnunet_genesis").mkdir(parents=True)
    (checkout / "nnunet_genesis" / "__init__.py").write_text("raise ImportError('shadowed by the checkout')\n")
    monkeypatch.chdir(checkout)
    ws = Workspace(tmp_path / "out")
    ws.root.mkdir()
    ctx = StepContext(ws, StepDisplay(1, "test"), ws.root / "logs" / "step.log")
    ctx.command([sys.executable, "-c", "import os; print('cwd=' + os.getcwd())"])
    ctx.command(genesis_command("--help"))
    log = ctx.log.read_text()
    assert f"cwd={ws.root}" in log
    assert "pretrain" in log and "shadowed" not in log


# a subcommand whose step runs a command that starts a child of its own, as nnUNetv2_train starts
# its data workers; run as `python -c` so that the test can signal it
STOPPABLE = """
import sys
from pathlib import Path
import nnunet_genesis.cli as cli
from nnunet_genesis.workflows import pipeline

def run(args):
    pipeline.run_logged(["sh", "-c", "sleep 300 & echo $! > grandchild.pid; sleep 300"], Path("step.log"),
                        {"PATH": "/usr/bin:/bin"})
    return 0

cli._load = lambda name: type("M", (), {"add_arguments": staticmethod(lambda p: None), "run": staticmethod(run)})
sys.exit(cli.main(["demo"]))
"""


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] != "Z"
    except OSError:
        return False


def test_sigterm_stops_the_command_and_everything_it_started(tmp_path):
    """kill -TERM of nnunet-genesis used to end it and leave its nnUNetv2_train child running."""
    proc = subprocess.Popen([sys.executable, "-c", STOPPABLE], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "grandchild.pid"
    for _ in range(300):
        if pid_file.is_file() and pid_file.read_text().strip():
            break
        time.sleep(0.1)
    grandchild = int(pid_file.read_text())
    assert _alive(grandchild)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert "interrupted" in proc.stderr.read()
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild), "the command's child outlived the stopped command"


def _shell_step(name: str, script: str, outputs: list[Path]) -> Step:
    return Step(name, name, lambda ctx: ctx.command(["sh", "-c", script]) or {}, lambda: outputs)


needs_two_cpus = pytest.mark.skipif(side_by_side_jobs(2) < 2, reason="needs taskset and two CPUs")


@needs_two_cpus
def test_parallel_steps_run_side_by_side_each_on_its_own_cpu(tmp_path):
    ws = Workspace(tmp_path / "out")
    ws.make()
    script = "grep Cpus_allowed_list /proc/self/status; sleep 1.5"
    group = Parallel([_shell_step("a", script, []), _shell_step("b", script, [])])
    t0 = time.monotonic()
    times = run_steps(ws, [_shell_step("first", "true", []), group], "test")
    elapsed = time.monotonic() - t0
    assert set(times.seconds) == {"first", "a", "b"}
    assert elapsed < 2.9, "the two 1.5 s steps did not overlap"
    assert times.wall < times.seconds["first"] + times.seconds["a"] + times.seconds["b"]
    allowed = {(ws.logs / f"{n:02d}_{name}.log").read_text().split("Cpus_allowed_list:")[1].split()[0]
               for n, name in ((2, "a"), (3, "b"))}
    assert len(allowed) == 2, f"both steps ran on the same CPUs: {allowed}"
    assert ws.is_done("a") and ws.is_done("b") and ws.done_info("a")["cpus"] in allowed


@needs_two_cpus
def test_a_failing_parallel_step_stops_its_partner_which_is_not_marked_done(tmp_path):
    ws = Workspace(tmp_path / "out")
    ws.make()
    group = Parallel([_shell_step("slow", "sleep 60", []), _shell_step("broken", "sleep 0.5; exit 3", [])])
    t0 = time.monotonic()
    with pytest.raises(StepFailed, match="exit code 3"):
        run_steps(ws, [group], "test")
    assert time.monotonic() - t0 < 30, "the partner step was not stopped"
    assert not ws.is_done("slow") and not ws.is_done("broken")
    # a re-run redoes both (the failed one now succeeds), and a finished group is skipped afterwards
    fixed = Parallel([_shell_step("slow", "true", []), _shell_step("broken", "true", [])])
    assert set(run_steps(ws, [fixed], "test").seconds) == {"slow", "broken"}
    assert ws.is_done("slow") and ws.is_done("broken")


def test_jobs_1_runs_a_group_in_order(tmp_path):
    ws = Workspace(tmp_path / "out")
    ws.make()
    order = tmp_path / "order.txt"
    group = Parallel([_shell_step("a", f"sleep 0.3; echo a >> {order}", []),
                      _shell_step("b", f"echo b >> {order}", [])], jobs=1)
    times = run_steps(ws, [group], "test")
    assert order.read_text().split() == ["a", "b"]
    assert times.wall == pytest.approx(times.seconds["a"] + times.seconds["b"])
