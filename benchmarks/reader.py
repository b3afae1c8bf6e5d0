"""Cost of the verified reader: ``read_volume`` (verify, then SimpleITK) vs plain SimpleITK.

Run:  python benchmarks/reader.py [--repeat 7] [--data ../shared/data]

For each real volume of the shared data (the largest CT, the lung NRRD at 512x512x48, the
DICOM series, the liver CT and a hippocampus image), both readers run ``--repeat`` times side
by side in one process (alternating, after one warm-up read each, so the file is in the page
cache for both) and the medians are printed with their ratio. The verification streams the
file once more (decompressing gzip), so a compressed file costs about twice a plain read or a little more;
the header checks (nibabel, pynrrd, pydicom: every spatial field finite and consistent) cost well under a
millisecond per file. A DICOM series costs about a plain read: each slice's header is read by pydicom
(about 1 ms a slice, where GDCM's header read took about 8 ms). Measured on an AMD EPYC (2 vCPUs, KVM):
ratios 2.2-2.4 for the gzip NIfTI and the NRRD, 1.0 for the DICOM series (1.2 before, with GDCM's header
reads), 1.3 for a small NIfTI. The figures belong in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from nnunet_genesis.volumes import read_volume


def _plain(path: Path):
    import SimpleITK as sitk

    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image)


def _verified(path: Path):
    return read_volume(path)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)
    ct = args.data / "ct_unlabeled"
    candidates = sorted(ct.glob("*.nii.gz"), key=lambda f: f.stat().st_size)[-1:] + [
        ct / "pyradiomics_lung1_ct.nrrd", ct / "totalseg_ct_dicom_series",
        args.data / "liver_lits117" / "liver_117_ct.nii.gz",
        *sorted((args.data / "Task04_Hippocampus" / "imagesTr").glob("*.nii.gz"))[:1]]
    paths = [c for c in candidates if c.exists()]
    if not paths:
        raise SystemExit(f"no shared data under {args.data}")
    print(f"{'volume':44s} {'size':>9s} {'shape':>16s} {'SimpleITK':>10s} {'verified':>10s} {'ratio':>6s}")
    for path in paths:
        _plain(path), _verified(path)  # warm-up: page cache, imports
        times = {"plain": [], "verified": []}
        for _ in range(args.repeat):
            for name, fn in (("plain", _plain), ("verified", _verified)):
                t0 = time.perf_counter()
                array = fn(path)
                times[name].append(time.perf_counter() - t0)
        plain, verified = statistics.median(times["plain"]), statistics.median(times["verified"])
        size = sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size
        print(f"{path.name[:44]:44s} {size / 2**20:7.1f}MB {str(tuple(array.shape[-3:])):>16s} "
              f"{plain * 1e3:8.1f}ms {verified * 1e3:8.1f}ms {verified / plain:6.2f}")
    print(f"(medians of {args.repeat} alternating reads; {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
