"""README's "Fidelity" table, written from docs/fidelity.yaml (the one place the official values live).

    python scripts/fidelity.py            # rewrite the table in README.md
    python scripts/fidelity.py --check    # exit 1 (one line) where README's table is not the file's

tests/test_fidelity.py checks both that README holds this table and that every preset composes to each row's keys.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "docs" / "fidelity.yaml"
README = REPO / "README.md"
BEGIN = "<!-- fidelity table: written by scripts/fidelity.py from docs/fidelity.yaml; edit that file, not this table -->"
END = "<!-- end of the fidelity table -->"
TABLE_PRESET = "cifar10_4k_mpl"  # the preset the table describes (others differ where per_preset says)
HEADER = ["| what | official (source) | here: key = value | deviation and reason |", "|---|---|---|---|"]


def load(path: Path = SOURCE) -> list[dict]:
    return yaml.safe_load(path.read_text())["rows"]


def yaml_value(value) -> str:
    """A value as a Hydra override writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def expected(rows: list[dict]) -> dict[str, dict[str, object]]:
    """Preset -> {key: value} that the rows ask of it."""
    out: dict[str, dict[str, object]] = {}
    for row in rows:
        for preset in row.get("presets", []):
            out.setdefault(preset, {}).update(row.get("keys", {}))
            out[preset].update(row.get("per_preset", {}).get(preset, {}))
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").strip()


def table(rows: list[dict]) -> str:
    lines = list(HEADER)
    for row in rows:
        source = row.get("source", "-")
        official = row["official"] if source in ("-", "") else f"{row['official']} ({source})"
        shown = {**row.get("keys", {}), **row.get("per_preset", {}).get(TABLE_PRESET, {})}
        keys = ", ".join(f"`{k}={yaml_value(v)}`" for k, v in shown.items())
        here = "; ".join(part for part in (keys, row.get("here", "")) if part)
        lines.append(f"| {_cell(row['what'])} | {_cell(official)} | {_cell(here)} | {_cell(row.get('deviation', ''))} |")
    return "\n".join(lines)


def with_table(readme: str, rows: list[dict]) -> str:
    """``readme`` with the text between the markers replaced by :func:`table`."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return f"{readme[:start]}\n{table(rows)}\n{readme[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if README's table differs")
    args = parser.parse_args(argv)
    readme, rows = README.read_text(), load()
    new = with_table(readme, rows)
    if args.check:
        if new != readme:
            print("fidelity.py: README.md's Fidelity table is not docs/fidelity.yaml's: run python scripts/fidelity.py",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
