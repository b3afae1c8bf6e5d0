import sys

from nnunet_genesis.workflows.pipeline import StepContext, StepDisplay, Workspace, genesis_command


def test_commands_run_in_the_workspace_so_a_source_checkout_cannot_shadow_the_package(tmp_path, monkeypatch):
    # a folder that looks like a source checkout: nnunet_genesis/ without the mapped subpackages
    checkout = tmp_path / "checkout"
    (checkout / "nnunet_genesis").mkdir(parents=True)
    (checkout / "nnunet_genesis" / "__init__.py").write_text("raise ImportError('shadowed by the checkout')\n")
    monkeypatch.chdir(checkout)
    ws = Workspace(tmp_path / "out")
    ws.root.mkdir()
    ctx = StepContext(ws, StepDisplay(1, "test"), ws.root / "logs" / "step.log")
    ctx.command([sys.executable, "-c", "import os; print('cwd=' + os.getcwd())"])
    ctx.command(genesis_command("--help"))
    log = ctx.log.read_text()
    assert f"cwd={ws.root}" in log
    assert "pretrain" in log and "shadowed" not in log
