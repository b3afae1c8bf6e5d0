"""Shared fixtures: where the real data lives.

Real data is read from ``../shared/data`` next to the project root, or from the folder named
by ``NNUNET_GENESIS_DATA``. In CI (``CI`` set) a missing folder is a failure, not a skip.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(Path(__file__).resolve().parent) not in sys.path:  # damage.py: helpers shared by the test folders
    sys.path.insert(0, str(Path(__file__).resolve().parent))


def shared_data_dir() -> Path:
    env = os.environ.get("NNUNET_GENESIS_DATA")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def require_data(relative: str) -> Path:
    """Path to a real-data item; fails in CI if missing, skips (loudly) elsewhere."""
    path = shared_data_dir() / relative
    if not path.exists():
        msg = (f"real data {path} is missing: set NNUNET_GENESIS_DATA to the folder holding "
               f"Task04_Hippocampus, ct_unlabeled and liver_lits117")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def ct_dir() -> Path:
    return require_data("ct_unlabeled")


@pytest.fixture(scope="session")
def hippocampus_dir() -> Path:
    return require_data("Task04_Hippocampus")


@pytest.fixture(scope="session")
def liver_dir() -> Path:
    return require_data("liver_lits117")


@pytest.fixture()
def nnunet_env(tmp_path, monkeypatch) -> dict[str, Path]:
    """Fresh nnUNet_raw/preprocessed/results folders for one test (set in os.environ)."""
    folders = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        monkeypatch.setenv(name, str(folders[name]))
    return folders


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder itself (fails in CI when missing)."""
    return require_data("")


def make_msd_subset(msd_task: Path, out: Path, n_train: int, n_test: int) -> Path:
    """Copy the first cases of an MSD task folder into ``out`` in the MSD layout."""
    import json
    import shutil

    meta = json.loads((msd_task / "dataset.json").read_text())
    dst = out / msd_task.name
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    training = meta["training"][:n_train]
    for case in training:
        for key in ("image", "label"):
            shutil.copy(msd_task / case[key], dst / case[key])
    test = meta["test"][:n_test]
    for t in test:
        shutil.copy(msd_task / t, dst / t)
    meta.update(training=training, test=test, numTraining=len(training), numTest=len(test))
    (dst / "dataset.json").write_text(json.dumps(meta, indent=2))
    return dst


@pytest.fixture(scope="session")
def hippocampus_preprocessed(tmp_path_factory, hippocampus_dir) -> dict[str, Path]:
    """A 10-case Task04_Hippocampus subset converted, planned and preprocessed (3d_fullres).

    Session-scoped and shared by the pretraining and trainer tests (about a minute on 2
    cores). Dataset id 4, name Dataset004_Hippocampus; 3 test images in imagesTs.
    Returns the nnUNet_* folders; tests that run nnU-Net set them in their environment
    (``monkeypatch.setenv`` or a subprocess ``env``) and must not modify these folders
    except by writing new, uniquely named plans or results.
    """
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("hippo_nnunet")
    env = dict(os.environ)
    folders = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folders[name] = root / name
        folders[name].mkdir()
        env[name] = str(folders[name])
    msd = make_msd_subset(hippocampus_dir, root / "msd", n_train=10, n_test=3)
    bindir = Path(sys.executable).parent
    for cmd in ([str(bindir / "nnUNetv2_convert_MSD_dataset"), "-i", str(msd), "-np", "1"],
                [str(bindir / "nnUNetv2_plan_and_preprocess"), "-d", "4", "-c", "3d_fullres",
                 "-np", "1", "--verify_dataset_integrity"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    folders["dataset_name"] = "Dataset004_Hippocampus"
    return folders
