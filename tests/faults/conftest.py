"""The fault-injection suite's shared inputs. The test files import ``fault_harness`` (this folder)
as a sibling module, as the benchmark tests import the benchmark scripts."""

import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from fault_harness import World, build_world  # noqa: E402


@pytest.fixture(scope="session")
def world(tmp_path_factory, ct_dir, hippocampus_dir, hippocampus_preprocessed) -> World:
    return build_world(tmp_path_factory.mktemp("fault_world"), ct_dir, hippocampus_dir, hippocampus_preprocessed)
