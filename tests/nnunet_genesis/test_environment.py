"""``nnunet-genesis env`` and nnU-Net's own trainer discovery through nnUNet_extTrainer."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_genesis import environment as envmod
from nnunet_genesis.errors import GenesisUserError


def test_ext_dir_holds_only_the_thin_modules():
    ext = envmod.ext_trainer_dir()
    assert (ext / "nnunet_genesis_trainers.py").is_file()
    text = (ext / "nnunet_genesis_trainers.py").read_text()
    assert "class " not in text and "from nnunet_genesis.trainers.variants import" in text


def test_env_command_prints_an_evaluable_export_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env["nnUNet_raw"] = str(tmp_path)
    env["nnUNet_extTrainer"] = "/some/other/trainers"
    r = subprocess.run([str(Path(sys.executable).parent / "nnunet-genesis"), "env"], env=env,
                       capture_output=True, text=True, check=True)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("export nnUNet_extTrainer=")
    value = shlex.split(lines[0][len("export "):])[0].split("=", 1)[1]
    assert value.split(os.pathsep) == [str(envmod.ext_trainer_dir()), "/some/other/trainers"]
    assert f"# nnUNet_raw={tmp_path}" in lines
    assert any(li.startswith("# nnUNet_results is not set") for li in lines)
    # the line really is shell syntax that sets the variable
    sh = subprocess.run(["sh", "-c", r.stdout + '\nprintf %s "$nnUNet_extTrainer"'], capture_output=True,
                        text=True, check=True)
    assert sh.stdout == value


def test_value_is_idempotent_and_other_shells():
    once = envmod.ext_trainer_value("")
    assert envmod.ext_trainer_value(once) == once
    assert envmod.format_assignment("X", "a b", "fish") == "set -gx X 'a b'"
    assert envmod.format_assignment("X", "it's", "powershell") == "$env:X = 'it''s'"
    assert envmod.format_assignment("X", "C:\\t", "cmd") == 'set "X=C:\\t"'
    assert envmod.environment_lines("cmd", {})[1].startswith("REM ")


def test_nnunet_finds_the_trainers_through_the_variable(monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_genesis.trainers import variants

    monkeypatch.setenv("nnUNet_extTrainer", envmod.ext_trainer_value(""))
    for module, name in ((variants, "nnUNetTrainerGenesis_smoke"), (variants, "nnUNetTrainerGenesis_freezeEncoder"),
                         (variants, "nnUNetTrainerScratch_smoke")):
        cls = recursive_find_trainer_class_by_name(name)
        assert cls is getattr(module, name)  # the installed class, not a copy
    assert "nnunet_genesis_trainers" not in sys.modules  # nnU-Net dropped the thin module again


HOSTILE = ["/data/$(touch PWNED)", "/data/`touch PWNED`", "/data/'; touch PWNED; '", "/data\ntouch PWNED",
           "/data/\\'; touch PWNED #", "/data & touch PWNED", "/data/$HOME"]


@pytest.mark.parametrize("shell_cmd", [["sh", "-c"], ["bash", "-c"], ["dash", "-c"]])
def test_eval_of_env_output_runs_nothing_whatever_the_folders_hold(shell_cmd, tmp_path):
    """A newline in nnUNet_raw used to end the comment line and run the rest under eval."""
    if shutil.which(shell_cmd[0]) is None:
        pytest.skip(f"{shell_cmd[0]} is not installed")
    for value in HOSTILE:
        env = {"nnUNet_raw": value, "nnUNet_preprocessed": value, "nnUNet_results": value,
               "nnUNet_extTrainer": value}
        script = "\n".join(envmod.environment_lines("sh", env)) + '\nprintf %s "$nnUNet_extTrainer"'
        r = subprocess.run([*shell_cmd, script], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, (value, r.stderr)
        assert not (tmp_path / "PWNED").exists(), value
        assert r.stdout.split(os.pathsep)[-1] == value  # the exact value, nothing evaluated


def test_every_shell_gets_one_line_per_assignment_and_cmd_refuses_what_it_cannot_quote():
    for shell in ("sh", "fish", "powershell", "cmd"):
        lines = envmod.environment_lines(shell, {"nnUNet_raw": "/a\nb", "nnUNet_extTrainer": "/x"})
        assert len(lines) == 4 and all("\n" not in line for line in lines[1:])
    assert envmod.format_assignment("X", "a\\b'c", "fish") == "set -gx X 'a\\\\b\\'c'"
    for bad in ("a & b", "50%", 'say "hi"', "a\nb"):
        with pytest.raises(GenesisUserError, match="cmd.exe"):
            envmod.format_assignment("X", bad, "cmd")


def test_env_says_a_file_is_a_file_not_a_missing_folder(tmp_path):
    """It used to say '(folder does not exist yet)' for a path that is a file."""
    (tmp_path / "raw").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert "a file, not a folder" in envmod.folder_status("nnUNet_raw", {"nnUNet_raw": str(tmp_path / "raw")})
    assert "leads nowhere" in envmod.folder_status("nnUNet_raw", {"nnUNet_raw": str(tmp_path / "dangling")})
    assert "does not exist yet" in envmod.folder_status("nnUNet_raw", {"nnUNet_raw": str(tmp_path / "new")})
    assert envmod.folder_status("nnUNet_raw", {"nnUNet_raw": str(tmp_path)}) == f"nnUNet_raw={tmp_path}"
