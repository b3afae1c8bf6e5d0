"""A small synthetic 3D segmentation dataset, so the demo needs nothing downloaded.

The volumes are SYNTHETIC: they imitate nothing anatomical. Each one is a textured
background (smoothed random noise, a smooth intensity bias field) holding two labelled
structures and, sometimes, an unlabelled distractor:

- label 1 ``ellipsoid``: a randomly oriented ellipsoid,
- label 2 ``torus``: a randomly oriented ring (torus),
- distractor: a rounded box with an intensity in the same range (not labelled), so that
  the network has to use shape, not only brightness.

Positions, sizes, orientations and intensities are random. Edges are soft (a partial-volume
ramp of about one voxel), the image is slightly blurred and carries Gaussian noise. Labels
are the exact inside of each implicit shape on the voxel grid.

Everything is vectorised (implicit functions on a coordinate grid, ``scipy.ndimage``
filters); case ``i`` of seed ``s`` is drawn from ``numpy.random.default_rng([s, i])``, so a
case does not depend on how many cases are generated. The dataset is written in nnU-Net v2's
raw layout (``imagesTr``/``labelsTr``/``imagesTs`` and ``dataset.json``) plus ``labelsTs``
with the test references (nnU-Net ignores that folder; the demo evaluates against it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_genesis.volumes import write_volume

LABELS = {"background": 0, "ellipsoid": 1, "torus": 2}
CASE_PREFIX = "genesisdemo"
DEFAULT_DATASET_ID = 990
DEFAULT_DATASET_NAME = "GenesisDemo"


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and difficulty of the synthetic dataset (defaults sized for the CPU demo)."""

    n_train: int = 24
    n_test: int = 8
    shape: tuple[int, int, int] = (40, 40, 40)  # numpy (z, y, x) order
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm, numpy (z, y, x) order
    seed: int = 0
    background_mean: float = 100.0
    texture_std: float = 10.0  # amplitude of the smooth background texture
    texture_sigma: float = 3.0  # voxels; correlation length of the texture
    bias_amplitude: float = 15.0  # peak-to-peak of the smooth bias field
    contrast_range: tuple[float, float] = (25.0, 50.0)  # |structure - background|
    edge_width: float = 0.6  # voxels; softness of the partial-volume edges
    blur_sigma: float = 0.6  # voxels
    noise_std: float = 5.0
    distractor_probability: float = 0.6

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_test < 0:
            raise ValueError("n_train must be >= 1 and n_test >= 0")
        if len(self.shape) != 3 or min(self.shape) < 24:
            raise ValueError(f"shape must be 3D with every side >= 24 voxels, got {self.shape}")


@dataclass(frozen=True)
class SyntheticCase:
    image: np.ndarray  # float32 (z, y, x)
    label: np.ndarray  # uint8 (z, y, x), values in LABELS


def case_id(index: int) -> str:
    """Case identifier in the Decathlon's style (``genesisdemo_001``)."""
    return f"{CASE_PREFIX}_{index:03d}"


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix, sign-corrected)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _local_coordinates(grid: np.ndarray, centre: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Coordinates of every voxel in a shape's own frame: shape (3, z, y, x)."""
    return np.tensordot(rotation.T, grid - centre[:, None, None, None], axes=1)


def _ellipsoid_distance(local: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Approximate signed distance (voxels) to an ellipsoid's surface; negative inside."""
    scaled = np.sqrt(np.sum((local / radii[:, None, None, None]) ** 2, axis=0))
    return (scaled - 1.0) * radii.min()


def _torus_distance(local: np.ndarray, major: float, minor: float) -> np.ndarray:
    """Exact signed distance to a torus around the local z axis; negative inside."""
    ring = np.sqrt(local[1] ** 2 + local[2] ** 2) - major
    return np.sqrt(ring ** 2 + local[0] ** 2) - minor


def _rounded_box_distance(local: np.ndarray, half: np.ndarray, rounding: float) -> np.ndarray:
    """Signed distance to a box with rounded edges; negative inside."""
    q = np.abs(local) - (half - rounding)[:, None, None, None]
    outside = np.sqrt(np.sum(np.maximum(q, 0.0) ** 2, axis=0))
    inside = np.minimum(np.max(q, axis=0), 0.0)
    return outside + inside - rounding


def _soft(distance: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume occupancy in [0, 1] from a signed distance."""
    return 1.0 / (1.0 + np.exp(np.clip(distance / max(width, 1e-3), -50, 50)))


def _centre(rng: np.random.Generator, shape: tuple[int, ...], margin: float) -> np.ndarray:
    lo = np.full(3, margin)
    hi = np.asarray(shape, dtype=float) - 1 - margin
    return rng.uniform(lo, np.maximum(hi, lo + 1))


def make_case(config: SyntheticConfig, index: int) -> SyntheticCase:
    """Generate case ``index`` (deterministic in ``config.seed`` and ``index``)."""
    rng = np.random.default_rng([config.seed, index])
    shape = tuple(int(s) for s in config.shape)
    grid = np.indices(shape, dtype=np.float32)
    size = min(shape)

    # Background: smooth texture plus a linear-ish bias field in a random direction.
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), config.texture_sigma)
    texture *= config.texture_std / max(float(texture.std()), 1e-6)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    ramp = np.tensordot(direction, grid / np.asarray(shape, dtype=np.float32)[:, None, None, None], axes=1)
    ramp = ramp - ramp.mean()
    image = config.background_mean + texture + config.bias_amplitude * ramp / max(float(np.ptp(ramp)), 1e-6)

    # Torus (label 2) and ellipsoid (label 1), kept apart by rejection sampling.
    major = rng.uniform(0.16, 0.24) * size
    minor = rng.uniform(0.06, 0.09) * size
    radii = rng.uniform(0.10, 0.22, size=3) * size
    torus_margin = major + minor + 1.0
    ellipsoid_margin = float(radii.max()) + 1.0
    for _ in range(100):
        c_torus = _centre(rng, shape, torus_margin)
        c_ell = _centre(rng, shape, ellipsoid_margin)
        if np.linalg.norm(c_torus - c_ell) > torus_margin + ellipsoid_margin - 2.0:
            break
    d_torus = _torus_distance(_local_coordinates(grid, c_torus, _random_rotation(rng)), major, minor)
    d_ell = _ellipsoid_distance(_local_coordinates(grid, c_ell, _random_rotation(rng)), radii)

    label = np.zeros(shape, dtype=np.uint8)
    label[d_ell < 0] = LABELS["ellipsoid"]
    label[d_torus < 0] = LABELS["torus"]  # the torus wins where (rarely) they touch

    lo, hi = config.contrast_range
    signs = rng.choice([-1.0, 1.0], size=3)
    contrasts = signs * rng.uniform(lo, hi, size=3)
    image = image + contrasts[0] * _soft(d_ell, config.edge_width) + contrasts[1] * _soft(d_torus, config.edge_width)

    if rng.random() < config.distractor_probability:
        half = rng.uniform(0.08, 0.16, size=3) * size
        c_box = _centre(rng, shape, float(np.linalg.norm(half)) + 1.0)
        d_box = _rounded_box_distance(_local_coordinates(grid, c_box, _random_rotation(rng)), half,
                                      0.3 * float(half.min()))
        d_box = np.maximum(d_box, 1.5 - np.minimum(d_ell, d_torus))  # carved 1.5 voxels clear of the labels
        image = image + contrasts[2] * _soft(d_box, config.edge_width)

    image = ndimage.gaussian_filter(image.astype(np.float32), config.blur_sigma)
    image += rng.normal(0.0, config.noise_std, size=shape).astype(np.float32)
    return SyntheticCase(image=image.astype(np.float32), label=label)


def dataset_folder_name(dataset_id: int = DEFAULT_DATASET_ID, name: str = DEFAULT_DATASET_NAME) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


def write_nnunet_dataset(raw_root: str | os.PathLike, config: SyntheticConfig = SyntheticConfig(),
                         dataset_id: int = DEFAULT_DATASET_ID, name: str = DEFAULT_DATASET_NAME) -> Path:
    """Write the synthetic dataset as ``raw_root/DatasetXXX_Name`` in nnU-Net v2's raw layout.

    Training cases are ``genesisdemo_000 .. n_train-1``, test cases follow on. The dataset is
    assembled in a temporary folder and renamed into place, so a crash never leaves a
    half-written dataset. An existing dataset folder is an error (remove it first).
    """
    raw_root = Path(raw_root)
    target = raw_root / dataset_folder_name(dataset_id, name)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    raw_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=raw_root))
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for i in range(config.n_train + config.n_test):
            case = make_case(config, i)
            split = "Tr" if i < config.n_train else "Ts"
            write_volume(case.image, config.spacing, tmp / f"images{split}" / f"{case_id(i)}_0000.nii.gz")
            write_volume(case.label, config.spacing, tmp / f"labels{split}" / f"{case_id(i)}.nii.gz")
        generate_dataset_json(
            str(tmp), {"0": "synthetic"}, dict(LABELS), config.n_train, ".nii.gz",  # not "CT": z-score normalisation
            dataset_name=name, reference="nnunet-genesis", license="generated data, no restrictions",
            converted_by="nnunet_genesis.synthetic", synthetic_config=asdict(config),
            description="SYNTHETIC volumes generated by nnunet_genesis.synthetic (textured background, a labelled "
                        "ellipsoid and torus, an unlabelled distractor); not anatomy.")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
