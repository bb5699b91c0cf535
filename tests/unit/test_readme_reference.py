"""The README's command reference is generated from the typer app and must stay in sync.

Run `scripts/gen-cli-reference` after changing a command.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def generated() -> str:
    typer_bin = Path(sys.executable).with_name("typer")
    out = subprocess.run(
        [str(typer_bin), "mlrig.main", "utils", "docs", "--name", "mlrig"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "100", "TERM": "dumb"},
    ).stdout
    # one level deeper so the reference nests under the README's own heading
    return re.sub(r"^(#+) ", r"##\1 ", out.strip(), flags=re.M).replace("&#x27;", "'")


def current() -> str:
    text = README.read_text()
    assert START in text and END in text, "README lacks the cli-reference markers"
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def test_readme_reference_matches_the_app() -> None:
    assert current() == generated(), "run scripts/gen-cli-reference"


def write() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n\n{generated()}\n\n{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
