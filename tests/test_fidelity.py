"""README's Fidelity table is docs/fidelity.yaml's, and every preset composes to the values each row names: the
official values live once, and a preset or a table row that drifts from them fails here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import fidelity  # noqa: E402

from mpl_runner.cli.config import compose_config  # noqa: E402

ROWS = fidelity.load()
EXPECTED = fidelity.expected(ROWS)
PRESETS = ["cifar10_4k_mpl", "cifar10_4k_official_code", "cifar10_4k_uda", "cifar10_4k_supervised", "svhn_1k_mpl",
           "cifar100_10k_mpl"]


def test_readme_holds_the_table_the_file_gives():
    readme = fidelity.README.read_text()
    assert fidelity.with_table(readme, ROWS) == readme, "run python scripts/fidelity.py"
    table = readme[readme.index(fidelity.BEGIN):readme.index(fidelity.END)]
    assert table.count("\n| ") == len(ROWS) + 1  # (each row once, and the header)


def test_every_row_names_its_keys_or_says_why_not():
    for row in ROWS:
        assert row.get("official") and row.get("what"), row
        assert bool(row.get("keys")) != bool(row.get("no_key")), f"{row['what']}: keys or no_key, not both/neither"
        assert not row.get("keys") or row.get("presets"), row["what"]
    assert set(EXPECTED) == set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_composes_to_every_row_s_values(preset):
    """Mutant caught: a preset value changed without its row (or a row without its preset), e.g. finetuning that
    smooths no labels, or reflect padding in the weak view."""
    cfg = compose_config(f"experiment={preset}")
    wrong = {}
    for key, value in EXPECTED[preset].items():
        got = OmegaConf.select(cfg, key, default="(absent)")
        if not (got == value or (isinstance(value, float) and isinstance(got, float) and got == pytest.approx(value))):
            wrong[key] = (got, value)
    assert not wrong, f"{preset}: key: (composed, docs/fidelity.yaml) {wrong}"


def test_the_issue_s_fixes_are_in_the_file():
    """Issue 20's corrections, stated once more so they cannot be edited away unnoticed."""
    rows = {row["what"]: row for row in ROWS}
    assert "210" in rows["teacher forward"]["source"]
    assert "`variance` or `beta` start at 1" in rows["EMA"]["official"]
    assert "never defines" in rows["unlabeled set"]["official"]
    assert rows["weak view"]["keys"]["dataset.pad_mode"] == "grey"
    finetune = rows["finetuning"]["keys"]
    assert (finetune["method.finetune.label_smoothing"], finetune["method.finetune.dropout"],
            finetune["method.finetune.from_ema"]) == (0.15, False, True)


def test_the_check_fails_on_a_readme_that_differs(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(fidelity.README.read_text().replace("`model.stem_width=32`", "`model.stem_width=16`"))
    monkeypatch.setattr(fidelity, "README", readme)
    assert fidelity.main(["--check"]) == 1 and "Fidelity table" in capsys.readouterr().err
    assert fidelity.main([]) == 0 and fidelity.main(["--check"]) == 0
