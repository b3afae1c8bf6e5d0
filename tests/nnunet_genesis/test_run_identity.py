"""The one check of a run folder's identity (demo, recipe, benchmark)."""

from __future__ import annotations

import pytest

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.run_identity import differing_keys, refuse_other_identity


def test_differing_keys_names_nested_and_missing_settings():
    recorded = {"seed": 0, "values": {"width": 0.25, "cpu_bf16": False}, "gone": 1}
    expected = {"seed": 0, "values": {"width": 0.5, "cpu_bf16": False}, "new": 2}
    assert differing_keys(recorded, expected) == ["gone", "new", "values.width"]
    assert differing_keys(expected, expected) == []


def test_a_folder_of_other_settings_is_refused_with_both_values(tmp_path):
    refuse_other_identity(None, {"seed": 1}, tmp_path, "a demo run", "Choose another folder.")  # nothing recorded
    refuse_other_identity({"seed": 1}, {"seed": 1}, tmp_path, "a demo run", "Choose another folder.")
    with pytest.raises(GenesisUserError) as e:
        refuse_other_identity({"seed": 0, "values": {"width": 0.25}}, {"seed": 1, "values": {"width": 0.25}},
                              tmp_path, "a demo run", "Choose another folder.")
    assert str(e.value) == (f"{tmp_path} belongs to a demo run with other settings (seed: recorded 0, now 1). "
                            f"Choose another folder.")
    assert e.value.exit_code == 2
