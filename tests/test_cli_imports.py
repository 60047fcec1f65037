"""``mpl-run --help``, ``--cfg job`` and config errors answer before torch (and scikit-learn, matplotlib, TensorBoard)
is imported; the registry's table of option modules is the one the packages register (its options load lazily)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mpl_runner.core import registry
from conftest import REPO

#: what only a run needs
HEAVY = ("torch", "torchvision", "sklearn", "matplotlib", "tensorboard", "timm", "optuna", "scipy")


def test_help_cfg_and_config_errors_import_no_torch(tmp_path):
    """One fresh interpreter runs ``mpl-run`` four times (its answers checked), then lists what was imported: a
    mistyped key is Hydra's error, ``trainer.steps=0`` our validation's."""
    script = textwrap.dedent(f"""
        import sys
        from mpl_runner.cli.main import cli

        for args in (["--help"], ["--cfg", "job"], ["trainer.stepz=3"], ["trainer.steps=0"]):
            sys.argv = ["mpl-run", *args, "hydra.run.dir={tmp_path / 'run'}"]
            try:
                cli()
                print("exit", 0, file=sys.stderr)
            except SystemExit as exit_:
                print("exit", exit_.code, file=sys.stderr)
        print("imported:", " ".join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "== Configuration groups ==" in result.stdout and "trainer:" in result.stdout  # --help, --cfg job
    errors = [line for line in result.stderr.splitlines() if line.startswith("mpl-run: error:")]
    expected = ["trainer.stepz is not a config key", "trainer.steps=0 is not allowed"]
    assert len(errors) == len(expected)
    for error, start in zip(errors, expected):
        assert error.startswith(f"mpl-run: error: {start}"), error
    assert [line for line in result.stderr.splitlines() if line.startswith("exit")] == ["exit 0"] * 2 + ["exit 2"] * 2
    assert result.stderr.strip().splitlines()[-1] == "imported:"  # none of them
    assert not (tmp_path / "run").exists()


def test_every_option_is_in_the_registry_table():
    """No module registers an option the table lacks (its schema would be missing when Hydra composes)."""
    for group in registry.PACKAGES:
        assert set(registry.entries(group)) == set(registry.MODULES[group]), group


@pytest.mark.slow  # (imports every option's module: torch, torchvision, timm)
def test_each_module_of_the_registry_table_registers_its_option():
    """Imported alone (a fresh interpreter, the table's order), each module of the table registers its option (a
    wrong one would cost the import of every option's module)."""
    script = textwrap.dedent("""
        import importlib
        from mpl_runner.core import registry

        for group, modules in registry.MODULES.items():
            for name, module in modules.items():
                importlib.import_module(module)
                assert name in registry._ENTRIES[group], f"{module} does not register {group} {name}"
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
