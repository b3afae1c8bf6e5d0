"""The benchmark scripts import their protocol module as a sibling file (``python benchmarks/X.py``
puts ``benchmarks/`` on the path); the tests import them the same way."""

import sys
from pathlib import Path

BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
