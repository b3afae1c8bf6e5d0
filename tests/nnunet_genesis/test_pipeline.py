import signal
import subprocess
import sys
import time
from pathlib import Path

from nnunet_genesis.workflows.pipeline import StepContext, StepDisplay, Workspace, genesis_command


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
