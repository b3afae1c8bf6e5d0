"""benchmarks/nnunet_master_check.py: its input checks, the base plan it writes and its verdict
(the check itself needs an nnU-Net master checkout, which no package registry serves)."""

from __future__ import annotations

import os
import subprocess
import sys

import nnunet_master_check as check  # benchmarks/, put on the path by conftest.py


def _inputs(tmp_path):
    """A fake master checkout (only the file the check looks for), a task folder and a checkpoint file."""
    src = tmp_path / "nnUNet"
    (src / check.MASTER_MARKER).parent.mkdir(parents=True)
    (src / check.MASTER_MARKER).write_text("")
    task = tmp_path / "Task04_Hippocampus"
    task.mkdir()
    (task / "dataset.json").write_text("{}")
    ckpt = tmp_path / "c.pth"
    ckpt.write_bytes(b"x")
    return src, task, ckpt


def test_a_source_tree_without_the_nnssl_route_is_refused_before_anything_is_written(tmp_path, capsys):
    _, task, ckpt = _inputs(tmp_path)
    out = tmp_path / "out"
    rc = check.main(["--nnunet-src", str(tmp_path), "--checkpoint", str(ckpt), "--msd-task", str(task), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "like_nnssl.py is missing" in err and str(tmp_path) in err and "Traceback" not in err
    assert not out.exists()


def test_bad_task_and_missing_checkpoint_exit_2(tmp_path, capsys):
    src, task, _ = _inputs(tmp_path)
    args = ["--nnunet-src", str(src), "-o", str(tmp_path / "out")]
    assert check.main([*args, "--checkpoint", "c.pth", "--msd-task", str(tmp_path)]) == 2
    assert "not a Decathlon task folder" in capsys.readouterr().err
    assert check.main([*args, "--checkpoint", str(tmp_path / "absent.pth"), "--msd-task", str(task)]) == 2
    assert "absent.pth: no such checkpoint file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_master_entry_calls_the_function_with_the_arguments(tmp_path):
    (tmp_path / "fake_entry.py").write_text("import sys\ndef main():\n    print(sys.argv[1:])\n    return 3\n")
    cmd = check.master_entry("fake_entry", "main", "-d", "4", "-n", "a b")
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 3 and done.stdout.strip() == "['-d', '4', '-n', 'a b']"
    assert cmd[0] == sys.executable


def test_the_base_plan_takes_the_checkpoints_network_and_keeps_the_rest():
    plans = {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {
        "patch_size": [40, 56, 40], "architecture": {"network_class_name": "x.PlainConvUNet", "arch_kwargs": {"n_stages": 4}}}}}
    adaptation = {"architecture_plans": {"arch_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                         "arch_kwargs": {"n_stages": 4, "features_per_stage": [8, 16, 32, 64]},
                                         "arch_kwargs_requiring_import": ["conv_op", "norm_op"]}}
    base = check.base_plans_with_checkpoint_architecture(plans, adaptation)
    config = base["configurations"]["3d_fullres"]
    assert base["plans_name"] == check.BASE_PLANS and config["patch_size"] == [40, 56, 40]
    assert config["architecture"] == {"network_class_name": adaptation["architecture_plans"]["arch_class_name"],
                                      "arch_kwargs": {"n_stages": 4, "features_per_stage": [8, 16, 32, 64]},
                                      "_kw_requires_import": ["conv_op", "norm_op"]}
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"] == {"n_stages": 4}  # input untouched


def test_the_verdict_needs_every_encoder_tensor_the_load_line_and_the_citations():
    ok = {"encoder_equal": [64, 64], "decoder_equal": [0, 60], "cited": True, "loaded_line": True}
    assert check.passed(ok)
    assert not check.passed({**ok, "encoder_equal": [63, 64]})
    assert not check.passed({**ok, "encoder_equal": [0, 0]})
    assert not check.passed({**ok, "cited": False})
    assert not check.passed({**ok, "loaded_line": False})


def test_a_folder_of_another_check_is_refused(tmp_path, capsys):
    src, task, ckpt = _inputs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / check.CONFIG_FILE).write_text('{"checkpoint_sha256": "0000"}')
    args = ["--nnunet-src", str(src), "--checkpoint", str(ckpt), "--msd-task", str(task), "-o", str(out)]
    assert check.main(args) == 2 and "checkpoint_sha256" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [check.CONFIG_FILE]
    (out / check.CONFIG_FILE).unlink()
    (out / "mine.txt").write_text("not a check's")
    assert check.main(args) == 2 and "is not a master-check folder" in capsys.readouterr().err
