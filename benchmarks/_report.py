"""What every benchmark does with its outcome: print the table, write results/NAME.md/.csv."""

from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_results(name, text, table, **to_csv):
    """Print ``text`` and write it to ``results/{name}.md``, ``table`` to ``{name}.csv``."""
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    table.to_csv(RESULTS / f"{name}.csv", index=False, **to_csv)
