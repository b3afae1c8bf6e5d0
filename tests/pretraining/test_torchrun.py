"""Pretraining across machines: two torchrun launchers on CPU (gloo), as on two nodes.

* two launchers (``--nnodes 2 --nproc-per-node 1``, c10d rendezvous on localhost) finish a
  prepared run; the checkpoint is the single-process format with ``world_size`` 2;
* one launcher SIGKILLed mid-run: its rank ends with it, the other launcher fails with a clear
  message, and both started again with ``--resume`` continue from the last checkpoint;
* launchers that disagree (OUT, --resume) are refused by every rank;
* ``pretrain --slurm FILE`` prepares the run and writes the multi-node batch script.

Launchers run in their own sessions and so do their ranks (torchrun's choice): every process
started here carries a marker in its environment, and whatever is left is killed at the end.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from nnunet_genesis.checkpoint import load_checkpoint
from nnunet_genesis.cli import main

pytestmark = pytest.mark.slow

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
MARKER = "NNUNET_GENESIS_TORCHRUN_TEST"


def _hippo_args(out: Path, *extra: str) -> list[str]:
    return ["pretrain", "-d", "4", "--plans-from", "4", "-o", str(out), "--workers", "0",
            "--patch-size", "16", "16", "16", "--batch-size", "2", "--val-patches", "4", "--png-every", "100", *extra]


@pytest.fixture()
def hippo(hippocampus_preprocessed, monkeypatch) -> dict[str, str]:
    env = {n: str(hippocampus_preprocessed[n]) for n in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _marked_processes(tag: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"{MARKER}={tag}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            pass
    return found


class Launchers:
    """Two torchrun launchers of one run, each with its log file."""

    def __init__(self, tmp: Path, tag: str):
        self.tmp, self.tag, self.procs, self.logs = tmp, tag, [], []

    def start(self, out: Path, name: str, *extra: str) -> list[subprocess.Popen]:
        from nnunetv2.run.run_training import find_free_network_port

        port = find_free_network_port()
        tmpdir = self.tmp / "tmp"  # torchrun's torchelastic_* folders stay here, not in the machine's /tmp
        tmpdir.mkdir(exist_ok=True)
        env = {**os.environ, MARKER: self.tag, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmpdir)}
        cmd = [TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "nnunet_genesis.pretraining.launch", str(out),
               "--device", "cpu", "--workers", "0", *extra]
        procs, logs = [], [self.tmp / f"{name}_{i}.log" for i in range(2)]
        for i, log in enumerate(logs):
            with open(log, "w") as f:
                procs.append(subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            if i == 0:  # the first launcher hosts the rendezvous store: which one is killed below is fixed
                _wait_for_port(port, procs[0], logs[0])
        self.procs += procs
        self.logs += logs
        return procs

    def wait(self, procs: list[subprocess.Popen], timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"torchrun launchers still running after {timeout:.0f} s\n{self.tails()}")
        return [p.returncode for p in procs]

    def tails(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2500:]}" for log in self.logs)

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        for pid in _marked_processes(self.tag):  # ranks live in sessions of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(r.split()[1].endswith(f":{port:04X}") and r.split()[3] == "0A" for r in rows):
            return True
    return False


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until the launcher listens on ``port`` (read from /proc: a probe connection would reach the store)."""
    deadline = time.monotonic() + timeout
    while not _listening(port):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"the first launcher did not open port {port} within {timeout:.0f} s"
        time.sleep(0.2)


@contextmanager
def launchers(tmp: Path):
    group = Launchers(tmp, uuid.uuid4().hex)
    try:
        yield group
    finally:
        group.kill_all()
        left = _marked_processes(group.tag)
        assert not left, f"processes left behind: {left}"


def _fold(out: Path) -> Path:
    from nnunet_genesis.pretraining.launch import RunState

    return RunState.load(out).output_folder()


def test_two_launchers_write_the_single_process_checkpoint_format(hippo, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_hippo_args(out, "--device", "cpu", "--epochs", "2", "--iters-per-epoch", "2", "--prepare-only")) == 0
    assert "--rdzv-endpoint HOST:PORT -m nnunet_genesis.pretraining.launch" in capsys.readouterr().out
    t0 = time.monotonic()
    with launchers(tmp_path) as group:
        procs = group.start(out, "run")
        assert group.wait(procs, 300) == [0, 0], group.tails()
    seconds = time.monotonic() - t0
    two = load_checkpoint(out / "genesis_final.pth")
    meta = two.metadata
    assert meta["world_size"] == 2 and meta["device"] == "cpu" and meta["batch_size"] == 2
    assert meta["epochs_done"] == 2 and len(meta["train_losses"]) == 2 == len(meta["val_losses"])
    text = "".join(log.read_text() for log in group.logs)
    assert "batch 1 per rank x 2 rank(s)" in text, text[-3000:]

    # the same run finished, exported again by one process: the same file apart from the process count
    (out / "genesis_final.pth").rename(tmp_path / "two_launchers.pth")
    assert main(["pretrain", "-o", str(out), "--resume", "--device", "cpu", "--workers", "0"]) == 0
    one = load_checkpoint(out / "genesis_final.pth")
    assert one.metadata["world_size"] == 1
    differ = {k for k in one.metadata.keys() | meta.keys() if one.metadata.get(k) != meta.get(k)}
    assert "world_size" in differ and differ <= {"world_size", "created"}, differ
    assert one.network_weights.keys() == two.network_weights.keys()
    assert all(torch.equal(one.network_weights[k], v) for k, v in two.network_weights.items())
    print(f"two launchers: {seconds:.0f} s")


def test_a_killed_launcher_then_resume_on_both_continues_from_the_checkpoint(hippo, tmp_path):
    out = tmp_path / "out"
    epochs = 6
    assert main(_hippo_args(out, "--device", "cpu", "--epochs", str(epochs), "--iters-per-epoch", "2",
                            "--save-every", "1", "--prepare-only")) == 0
    latest = _fold(out) / "checkpoint_latest.pth"
    with launchers(tmp_path) as group:
        host, peer = group.start(out, "killed")
        deadline = time.monotonic() + 300
        while not latest.exists():
            assert host.poll() is None and peer.poll() is None, group.tails()
            assert time.monotonic() < deadline, f"no checkpoint after 300 s\n{group.tails()}"
            time.sleep(0.1)
        os.kill(peer.pid, signal.SIGKILL)  # the launcher only, as `kill -9 PID` of torchrun would
        t_kill = time.monotonic()
        assert host.poll() is None, "the run ended before the kill"
        assert group.wait([host], 120) != [0]  # the survivor fails instead of hanging
        survivor_s = time.monotonic() - t_kill
        deadline = time.monotonic() + 30
        while _marked_processes(group.tag) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _marked_processes(group.tag), "a rank outlived its launcher"
        host_log, peer_log = (log.read_text() for log in group.logs[:2])
        assert "the torchrun launcher of rank" in peer_log and "is gone" in peer_log, peer_log[-3000:]
        assert "lost the other ranks" in host_log and "--resume" in host_log, host_log[-3000:]
        reached = torch.load(latest, map_location="cpu", weights_only=True)["current_epoch"]
        assert 1 <= reached < epochs
        assert not (out / "genesis_final.pth").exists()

        procs = group.start(out, "resumed", "--resume")
        assert group.wait(procs, 300) == [0, 0], group.tails()
    text = "".join(log.read_text() for log in group.logs[2:])
    assert f"Resuming Genesis pretraining at epoch {reached} (of {epochs})" in text, text[-3000:]
    meta = load_checkpoint(out / "genesis_final.pth").metadata
    assert meta["world_size"] == 2 and meta["epochs_done"] == epochs and len(meta["train_losses"]) == epochs
    print(f"survivor ended {survivor_s:.1f} s after the kill; resumed at epoch {reached} of {epochs}")


def test_launchers_that_disagree_are_refused(tmp_path, monkeypatch):
    """Every rank sees every launcher's OUT and --resume (gathered) and refuses the same way: a rank
    started without --resume next to resumed ones would train from epoch 0 with other weights."""
    import torch.distributed as dist

    from nnunet_genesis.errors import GenesisUserError
    from nnunet_genesis.pretraining.launch import RunState, _check_launchers

    folders = {n: str(tmp_path / n) for n in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    state = RunState("Dataset900_GenesisPretrain", "genesisPretrainPlans", "3d_fullres", 0, folders)
    out = tmp_path / "out"

    def check(mine_resume: bool, **other):
        def gather(target, mine):
            target[:] = [mine, {**mine, **other}]
        monkeypatch.setattr(dist, "all_gather_object", gather)
        _check_launchers(state, out, mine_resume)

    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    check(False)
    with pytest.raises(GenesisUserError, match=r"rank 1 \(on node2\) without --resume"):
        check(True, resume=False, host="node2")
    with pytest.raises(GenesisUserError, match="Dataset901_GenesisPretrain"):
        check(False, run=["Dataset901_GenesisPretrain", "genesisPretrainPlans", "3d_fullres", 0], out="/elsewhere")
    fold = state.output_folder()
    fold.mkdir(parents=True)
    torch.save({"network_weights": {}}, fold / "checkpoint_latest.pth")  # a checkpoint --resume can read
    with pytest.raises(GenesisUserError, match="would train from epoch 0 over it"):
        check(False)
    check(True)


def _sbatch_options(script: str) -> list[str]:
    return [line.split(None, 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_slurm_writes_the_multi_node_script_and_trains_nothing(hippo, tmp_path, capsys):
    from torch.distributed.run import get_args_parser

    out, script = tmp_path / "shared" / "out", tmp_path / "jobs" / "pretrain.sbatch"
    assert main(_hippo_args(out, "--epochs", "3", "--batch-size", "6", "--slurm", str(script),
                            "--slurm-nodes", "3", "--slurm-gpus-per-node", "2", "--sbatch=--time=24:00:00")) == 0
    assert f"sbatch {script}" in capsys.readouterr().out
    text = script.read_text()
    assert (out / "pretrain_state.json").is_file()
    fold = _fold(out)
    assert not fold.exists() and not (out / "genesis_final.pth").exists()  # nothing trained
    assert _sbatch_options(text)[1:] == ["--nodes=3", "--ntasks-per-node=1", "--gpus-per-node=2",
                                         f"--output={out.resolve()}/slurm-%j.out", "--time=24:00:00"]
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0

    # run it with stand-ins for scontrol and srun: srun records the command it would start on every node
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'node07\\nnode08\\nnode09\\n'\n")
    (bin_dir / "srun").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'srun_args'}\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node[07-09]",
           "SLURM_NNODES": "3", "SLURM_JOB_ID": "4242"}

    def srun_argv() -> list[str]:
        subprocess.run(["bash", str(script)], env=env, check=True)
        return (tmp_path / "srun_args").read_text().splitlines()

    argv = srun_argv()
    assert argv[:4] == ["--kill-on-bad-exit=1", sys.executable, "-m", "torch.distributed.run"]
    run = get_args_parser().parse_args(argv[4:])  # torchrun's own parser
    assert (run.nnodes, run.nproc_per_node, run.rdzv_backend, run.rdzv_id) == ("3", "2", "c10d", "4242")
    assert run.rdzv_endpoint == f"node07:{20000 + 4242}" and run.module
    assert run.training_script == "nnunet_genesis.pretraining.launch"
    # no checkpoint yet: no --resume
    assert run.training_script_args == [str(out.resolve()), "--device", "cuda", "--workers", "0"]
    fold.mkdir(parents=True)
    torch.save({"network_weights": {}}, fold / "checkpoint_latest.pth")  # a checkpoint --resume can read
    assert get_args_parser().parse_args(srun_argv()[4:]).training_script_args[-1] == "--resume"

    # the run already in OUT, for another cluster shape: --resume writes its script without preparing again
    assert main(["pretrain", "-o", str(out), "--resume", "--slurm", str(script), "--slurm-nodes", "2"]) == 0
    assert "--nodes=2" in _sbatch_options(script.read_text()) and "--gpus-per-node=1" in _sbatch_options(
        script.read_text())
    assert not (out / "genesis_final.pth").exists()


@pytest.mark.parametrize("extra, words", [
    (["--slurm-nodes", "2"], "only used with --slurm"),
    (["--slurm", "S", "--num-gpus", "2"], "--num-gpus is for training on this machine"),
    (["--slurm", "S", "--slurm-nodes", "4", "--batch-size", "2"], "needs a global batch size of at least 4"),
    (["--slurm", "S", "--device", "cpu", "--slurm-gpus-per-node", "2"], "one process per node"),
    (["--slurm", "S", "--slurm-nodes", "0"], "--slurm-nodes 0: must be at least 1"),
])
def test_slurm_option_mistakes_exit_2_before_any_work(tmp_path, capsys, extra, words):
    extra = [str(tmp_path / "s.sbatch") if x == "S" else x for x in extra]
    out = tmp_path / "out"
    assert main(["pretrain", "-i", str(tmp_path), "-o", str(out), *extra]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "s.sbatch").exists()


def test_launch_outside_torchrun_is_a_user_error(tmp_path, capsys, monkeypatch):
    from nnunet_genesis.pretraining.launch import main as launch_main

    for name in ("RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    assert launch_main([str(tmp_path), "--device", "cpu"]) == 2
    assert "torchrun entry point" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert launch_main([str(tmp_path), "--device", "cpu"]) == 2  # not a prepared run
    assert "pretrain_state.json" in capsys.readouterr().err


def test_slurm_script_quotes_paths(tmp_path):
    from nnunet_genesis.pretraining.launch import RunState, slurm_script

    folders = {n: str(tmp_path / "with space" / n) for n in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    state = RunState("Dataset900_GenesisPretrain", "genesisPretrainPlans", "3d_fullres", 0, folders)
    text = slurm_script(state, tmp_path / "with space" / "out", 2, 4, "cuda", python="/opt/py env/bin/python")
    srun = " ".join(line.rstrip("\\") for line in text.split("srun ", 1)[1].splitlines())
    words = shlex.split(srun.replace('"$SLURM_NNODES"', "2").replace('"$SLURM_JOB_ID"', "1")
                        .replace('"$MASTER:$PORT"', "n1:1").replace("$RESUME", ""))
    assert words[1] == "/opt/py env/bin/python" and str(tmp_path / "with space" / "out") in words
