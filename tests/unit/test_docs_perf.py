"""The docs' performance page (docs/performance.md) is rendered from the recorded benchmark
results (bench/report.py) and must stay in sync with them.

Run `python bench/report.py` after recording a benchmark's results.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


def load_report() -> ModuleType:
    """bench/report.py as a module (bench/ is scripts, not a package): importing it runs
    nothing."""
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = load_report()


def test_docs_perf_section_matches_the_recorded_results() -> None:
    current = report.section((ROOT / "docs" / "performance.md").read_text())
    assert current == report.render().strip(), "run `python bench/report.py`"


def a_row(label: str, tool: str, samples: list[float], method: str = "whole command") -> Any:
    ordered = sorted(samples)
    return {
        "label": label,
        "tool": tool,
        "method": method,
        "unit": "s",
        "n": len(samples),
        "median": ordered[len(ordered) // 2],
        "min": ordered[0],
        "max": ordered[-1],
        "samples": samples,
    }


META = {
    "when": "2026-11-30T06:00:00+00:00",
    "cpus": 2,
    "memory_gib": 7.7,
    "load_avg": [0.5, 0.6, 0.7],
    "load_avg_after": [0.9, 0.7, 0.7],
    "os": "Linux-6.1-x86_64",
    "python": "3.11.7",
    "docker_engine": "24.0.7",
    "versions": {"mlflow": "3.17.2", "dvc": "3.67.1", "docker": "7.2.0"},
}


def write(folder: Path, stem: str, doc: Any) -> None:
    (folder / f"{stem}.json").write_text(json.dumps(doc))


def test_render_takes_each_benchmarks_newest_result_with_rows(tmp_path: Path) -> None:
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    old = {"meta": META, "rows": [a_row("plan", "mlrig", [9.0, 9.0, 9.0])]}
    new = {
        "meta": META,
        "rows": [
            a_row("plan", "mlrig", [1.5, 1.25, 1.0, 2.0, 1.75]),
            a_row("plan | pipe", "by hand", [123.4], method="client-side"),
        ],
        "summary": ["goal < 5 s: met"],
    }
    write(results, "zeta-20261129T000000Z", old)
    write(results, "zeta-20261130T000000Z", new)
    write(results, "zeta-20261201T000000Z", {"meta": META, "samples": {"x": [1.0]}})  # old schema
    write(results, "tracking-20261101T000000Z", old)
    write(results, "stray", new)  # no stamp: not a result

    body = report.render(results, tmp_path)

    tracking, zeta = body.index("### Tracking server"), body.index("### zeta")
    assert tracking < zeta  # known benchmarks first, in the page's order
    part = body[zeta:]
    assert "| plan | mlrig | 1.50 s | 1.00-2.00 | 5 | whole command |" in part
    assert "| plan \\| pipe | by hand | 123 s | 123-123 | 1 | client-side |" in part
    assert "- goal < 5 s: met" in part
    assert "9.00" not in part  # the older result is not shown
    line = part.splitlines()[-1]
    assert line.startswith("Measured 2026-11-30 06:00 UTC on 2 CPUs, 7.7 GiB memory")
    for fact in (
        "load average 0.5/0.6/0.7",
        "0.9 at the end",
        "Linux-6.1-x86_64",
        "Python 3.11.7",
        "Docker engine 24.0.7",
        "MLflow 3.17.2",
        "DVC 3.67.1",
        "docker-py 7.2.0",
        "`bench/results/zeta-20261130T000000Z.json`",
    ):
        assert fact in line


def test_render_without_results_says_how_to_make_them(tmp_path: Path) -> None:
    assert "No benchmark has recorded results" in report.render(tmp_path, tmp_path)


def test_write_then_check(tmp_path: Path, capsys: Any) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write(results, "zeta-20261130T000000Z", {"meta": META, "rows": [a_row("x", "y", [1.0])]})
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\n{report.BEGIN}\nstale\n{report.END}\n\n## After\n")

    assert report.main(["--check"], readme, results) == 1
    assert "run `python bench/report.py`" in capsys.readouterr().err
    assert report.main([], readme, results) == 0
    text = readme.read_text()
    assert text.startswith(f"# t\n\n{report.BEGIN}\n") and text.endswith(
        f"{report.END}\n\n## After\n"
    )
    assert "| x | y | 1.00 s |" in text
    assert report.main(["--check"], readme, results) == 0


def test_check_without_markers_fails(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# t\n")
    assert report.main(["--check"], readme, tmp_path) == 1
