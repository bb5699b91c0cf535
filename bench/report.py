"""The docs' performance page (docs/performance.md), rendered from the recorded benchmark results.

For each benchmark NAME, the newest results/NAME-<UTC stamp>.json whose "rows" follow
common.row's schema gives one table (what, tool, median, min-max, n, how it was measured),
the benchmark's optional "summary" lines (goals, verdicts) under it, and a line with the
machine, versions and load its "meta" (common.machine()) recorded, the date and the file.
Results without such rows (older schemas) are skipped.

    python bench/report.py          # rewrite docs/performance.md's section in place
    python bench/report.py --check  # exit 1 if the page differs from what the results give

Importable without side effects (tests/unit/test_docs_perf.py renders it from there).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- perf:begin -->", "<!-- perf:end -->"
RESULT_FILE = re.compile(r"^(?P<name>[a-z0-9_-]+?)-(?P<stamp>\d{8}T\d{6}Z)\.json$")
ROW_KEYS = frozenset({"label", "tool", "method", "unit", "n", "median", "min", "max", "samples"})
# Known benchmarks in the page's order, with their headings; a result's own "title" wins,
# and a benchmark not named here follows these under its name.
TITLES = {
    "tracking": "Tracking server: stock MLflow basic-auth vs mlrig vs no auth",
    "auth-hook": "Where an authenticated request's time goes",
    "load": "Tracking server under load",
    "load-sizing": "Tracking server under load: the size that holds it",
    "load-production": "Tracking server under load: one production task",
    "stackup": "Local stack up",
    "stack-plan": "`mlrig stack plan`",
    "rehearse": "The AWS tracking-server container per profile",
    "init": "Bootstrap a repository: `mlrig init` vs by hand",
    "retrain": "Retraining: new rows -> registered version",
    "provenance": "Provenance: `mlrig trace` and `mlrig checkout` vs by hand",
    "monitor": "Drift: `mlrig monitor` vs Evidently's DataDriftPreset",
    "image": "Serving images",
    "image-flavors": "Serving images per model flavor: size (the image checked before tagging)",
    "deploy": "Deploy on the local stack: `mlrig deploy` vs `docker run` and `mlflow models serve`",
    "capture": "Request capture: the same image with capture 0 vs 10 % at 200 req/s",
    "temporal": "Point-in-time join: DuckDB's ASOF JOIN vs pandas' merge_asof",
    "dvc-growth": "Dated partitions: DVC remote growth, partitioned vs single table",
    "compute": "Remote retrain on the local compute backend vs in-process",
}
PACKAGES = {"mlflow": "MLflow", "dvc": "DVC", "docker": "docker-py"}


def has_rows(doc: Any) -> bool:
    """A result in common.row's schema: a "rows" list of rows with every field."""
    rows = doc.get("rows") if isinstance(doc, dict) else None
    return (
        isinstance(rows, list)
        and bool(rows)
        and all(isinstance(r, dict) and r.keys() >= ROW_KEYS for r in rows)
    )


def newest(results: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """(name, file, document) of each benchmark's newest result with rows, in the page's order."""
    found: dict[str, tuple[str, Path, dict[str, Any]]] = {}
    files = [(m, f) for f in results.glob("*.json") if (m := RESULT_FILE.match(f.name))]
    for match, file in sorted(files, key=lambda mf: mf[0]["stamp"], reverse=True):
        name = match["name"]
        if name in found:
            continue
        doc = json.loads(file.read_text())
        if has_rows(doc):
            found[name] = (name, file, doc)
    order = {name: i for i, name in enumerate(TITLES)}
    return sorted(found.values(), key=lambda t: (order.get(t[0], len(order)), t[0]))


def number(x: float | None) -> str:
    """Three significant figures at most, never a long tail of decimals."""
    if x is None:
        return "–"
    size = abs(x)
    return f"{x:.0f}" if size >= 100 else f"{x:.1f}" if size >= 10 else f"{x:.2f}"


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| what | tool | median | min-max | n | measured as |", "|---|---|---|---|---|---|"]
    for r in rows:
        if not r["n"] or r["median"] is None:
            continue
        unit = f" {r['unit']}" if r["unit"] else ""
        lines.append(
            f"| {cell(r['label'])} | {cell(r['tool'])} | {number(r['median'])}{unit} "
            f"| {number(r['min'])}-{number(r['max'])} | {r['n']} | {cell(r['method'])} |"
        )
    return lines


def when(meta: dict[str, Any], file: Path) -> str:
    """The run's start (meta's "when"), or else the stamp in the file's name."""
    try:
        moment = datetime.fromisoformat(str(meta["when"]))
    except (KeyError, ValueError):
        moment = datetime.strptime(file.stem.rsplit("-", 1)[-1], "%Y%m%dT%H%M%SZ")
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def machine_line(meta: dict[str, Any], file: Path, shown: str) -> str:
    """Where and when: the machine, its load, the versions, the date and the results file."""
    parts = []
    if meta.get("cpus"):
        parts.append(f"{meta['cpus']} CPUs")
    if meta.get("memory_gib"):
        parts.append(f"{meta['memory_gib']} GiB memory")
    if meta.get("load_avg"):
        load = "/".join(str(x) for x in meta["load_avg"])
        after = meta.get("load_avg_after")
        parts.append(
            f"load average {load} (1/5/15 min)" + (f", {after[0]} at the end" if after else "")
        )
    if meta.get("os"):
        parts.append(str(meta["os"]))
    if meta.get("python"):
        parts.append(f"Python {meta['python']}")
    if meta.get("docker_engine"):
        parts.append(f"Docker engine {meta['docker_engine']}")
    versions = meta.get("versions") or {}
    parts += [f"{PACKAGES.get(k, k)} {v}" for k, v in versions.items()]
    return f"Measured {when(meta, file)} on {', '.join(parts)}; results: `{shown}`."


def render(results: Path = RESULTS, root: Path = ROOT) -> str:
    """The section between the markers (without them)."""
    found = newest(results)
    out = [
        "<!-- generated by `python bench/report.py` from bench/results/: edit the results, "
        "not this -->"
    ]
    if not found:
        out += [
            "",
            "No benchmark has recorded results in the current schema yet: run one "
            "(`.venv/bin/python bench/NAME/NAME_bench.py`), then `python bench/report.py`.",
        ]
    for name, file, doc in found:
        meta = doc.get("meta") or {}
        title = doc.get("title") or TITLES.get(name, name)
        folder = name.replace("-", "_")  # bench/NAME/NAME_bench.py, one folder a benchmark
        script = root / "bench" / folder / f"{folder}_bench.py"
        heading = f"### {title}" + (
            f" (`bench/{folder}/{script.name}`)" if script.is_file() else ""
        )
        try:
            shown = file.relative_to(root).as_posix()
        except ValueError:
            shown = file.name
        out += ["", heading, "", *table(doc["rows"])]
        summary = [s for s in doc.get("summary") or [] if isinstance(s, str)]
        if summary:
            out += ["", *(f"- {s}" for s in summary)]
        out += ["", machine_line(meta, file, shown)]
    return "\n".join(out)


def section(text: str) -> str:
    """What the page's text holds between the markers (stripped); KeyError without them."""
    if BEGIN not in text or END not in text:
        raise KeyError(f"no {BEGIN} ... {END} markers")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def replaced(text: str, body: str) -> str:
    """The page's text with body between the markers."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def main(
    argv: list[str] | None = None,
    readme: Path = PAGE,
    results: Path = RESULTS,
    root: Path = ROOT,
) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/performance.md is stale"
    )
    args = parser.parse_args(argv)
    text = readme.read_text()
    try:
        current = section(text)
    except KeyError as exc:
        print(f"{readme.name}: {exc.args[0]}", file=sys.stderr)
        return 1
    body = render(results, root)
    if args.check:
        if current != body.strip():
            print(
                f"{readme.name}'s performance section differs from the recorded results: "
                "run `python bench/report.py`",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != body.strip():
        readme.write_text(replaced(text, body))
        print(f"{readme.name}: performance section rewritten", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
