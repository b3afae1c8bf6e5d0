"""Stand-ins for outside programs and one timed subprocess runner, shared by the test folders."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def stand_in_sbatch(tmp_path: Path, reply: str) -> tuple[Path, Path]:
    """An ``sbatch`` that records job n's options (``jobs/n.args``) and script (``jobs/n.sh``) and
    prints ``reply``, a bash word in which ``n`` is the job's number (e.g. ``'$((100 + n))'``).
    Returns (jobs folder, folder to put first on PATH)."""
    jobs, fakebin = tmp_path / "jobs", tmp_path / "bin"
    jobs.mkdir()
    fakebin.mkdir()
    (fakebin / "sbatch").write_text(f'#!/bin/bash\nn=$(ls {jobs} | grep -c "sh$")\necho "$@" > {jobs}/$n.args\n'
                                    f'cat > {jobs}/$n.sh\necho {reply}\n')
    (fakebin / "sbatch").chmod(0o755)
    return jobs, fakebin


def timed_run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``cmd`` with its output captured; prints the command, exit code and seconds (in pytest's log)."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    print(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])}: rc {r.returncode} in {time.perf_counter() - t0:.1f} s")
    return r
