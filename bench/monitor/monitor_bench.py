"""Monitor benchmark: `mlrig monitor` on a 50k x 20 reference vs a 10k-row window, with
Evidently's DataDriftPreset timed beside it on the same data, both whole commands, interleaved;
and the power test of the default decision (in-process, labelled so).

Set-up (untimed): a fresh local stack (`mlrig stack up --local`, a whole command, its own
row); a synthetic reference (20 normal features, a 0/1 target) put in the stack's DVC remote
by md5 and recorded as the `dvc.dep.data/processed/train.csv` of an MLflow run that a
registered version names, as the pipeline's train stage records it; a git repository holding
only data/schema.yaml; captures of 10k rows (100 requests of 100 rows, one feature moved by
0.3 σ) in the agreed format under the stack's captures/bench/.

- `mlrig monitor bench --report FILE --repo DIR`: captures read and validated, provenance
  traced, the reference read from the remote and md5-checked, schema rules, statistics,
  an MLflow run logged, the HTML report written.
- Evidently: `python evidently_drift.py reference.csv live.csv report.html` in Evidently's
  own venv (--evidently-venv; default ~/.cache/mlrig-bench/evidently-venv, made with
  `python3.11 -m venv` + `pip install evidently==0.7.23 "pandas<3"`): the two CSVs read,
  DataDriftPreset run, its HTML report saved. It is given the window as a CSV (it cannot read
  captures).
- power (in-process): `drift_stats.compare` with the default thresholds, 20 seeds each, a 0.5 σ
  mean shift in 1 of 20 features (flagged = that feature drifts) and no shift (a false alarm =
  any feature drifts), at several window sizes.

Run: .venv/bin/python bench/monitor/monitor_bench.py [--samples 5] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common
from common import (
    IN_PROCESS,
    MLRIG,
    WHOLE,
    fresh_home,
    interleave,
    machine,
    markdown,
    record,
    row,
    sh,
    tear_down,
    timed,
    utc_stamp,
)

HERE = Path(__file__).resolve().parent
MODEL = "benchmon"
ENDPOINT = "bench"
FEATURES = 20
DEFAULT_VENV = Path.home() / ".cache" / "mlrig-bench" / "evidently-venv"


def frame(rows: int, seed: int, shift: float = 0.0, shifted: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(rows, FEATURES))
    data[:, shifted] += shift
    out = pd.DataFrame(data, columns=[f"f{i:02d}" for i in range(FEATURES)])
    return out


def setup(home: Path, env: dict[str, str], rows: int, window: int) -> dict[str, Any]:
    """The stack, the registered version with its reference on the remote, the captures."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("MLRIG_")})
    from mlflow import MlflowClient

    from mlrig.core.stack import stacks
    from mlrig.core.stack.env import client_env
    from mlrig.core.stack.local.state import Layout

    outputs = stacks.outputs("local")
    os.environ.update(client_env(outputs))
    reference = frame(rows, 1)
    reference["target"] = (reference["f00"] + reference["f01"] > 0).astype(int)
    text = reference.to_csv(index=False).encode()
    md5 = hashlib.md5(text, usedforsecurity=False).hexdigest()
    obj = Path(outputs.dvc_remote.url) / "files" / "md5" / md5[:2] / md5[2:]
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(text)
    client = MlflowClient()
    exp = client.create_experiment(MODEL)
    run = client.create_run(
        exp, tags={"dvc.stage": "train", "dvc.dep.data/processed/train.csv": md5}
    )
    run_id = run.info.run_id
    client.log_metric(run_id, "test_roc_auc", 0.9)
    client.set_terminated(run_id)
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id=run_id).version

    repo = home / "repo"
    (repo / "data").mkdir(parents=True)
    columns = {c: {"type": "float", "nullable": False} for c in reference.columns[:-1]}
    columns["target"] = {"type": "int", "nullable": False, "values": [0, 1]}
    (repo / "data" / "schema.yaml").write_text(json.dumps({"target": "target", "columns": columns}))
    sh(repo, "git", "init", "-q", env=env)

    live = frame(window, 2, shift=0.3)
    predictions = (live["f00"] + live["f01"] > 0).astype(int).tolist()
    now = datetime.now(UTC) - timedelta(minutes=1)
    folder = Layout("local").root / "captures" / ENDPOINT / f"{now:%Y/%m/%d/%H}"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(0, window, 100):
        chunk = live.iloc[i : i + 100]
        request = {
            "dataframe_split": {"columns": list(chunk.columns), "data": chunk.values.tolist()}
        }
        iid = f"00000000-0000-4000-8000-{i:012d}"
        answers = predictions[i : i + 100]
        lines.append(
            json.dumps(
                {
                    "captureData": {
                        "endpointInput": {"observedContentType": "application/json",
                                          "mode": "INPUT", "data": json.dumps(request),
                                          "encoding": "JSON"},
                        "endpointOutput": {"observedContentType": "application/json",
                                           "mode": "OUTPUT",
                                           "data": json.dumps({"predictions": answers}),
                                           "encoding": "JSON"},
                    },
                    "eventMetadata": {"eventId": iid, "inferenceId": iid,
                                      "inferenceTime": now.strftime("%Y-%m-%dT%H:%M:%S.000Z")},
                    "eventVersion": "0",
                    "mlrig": {"endpoint": ENDPOINT, "model": MODEL, "version": str(version),
                              "digest": None, "run_id": run_id},
                }
            )
        )  # fmt: skip
    (folder / "bench-000001.jsonl").write_text("\n".join(lines) + "\n")
    reference.drop(columns=["target"]).to_csv(home / "reference.csv", index=False)
    live.to_csv(home / "live.csv", index=False)
    return {"repo": repo, "version": str(version)}


CPU: dict[str, list[float]] = {}  # user + system seconds of each whole command, per tool


def run_allowing(
    argv: list[str], env: dict[str, str], ok: tuple[int, ...], tool: str
) -> tuple[float, str]:
    """Wall seconds of a whole command whose exit code may say drift (10); its CPU seconds
    (user + system, the process and its children: what a loaded machine does not inflate as
    much) go to CPU[tool]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({proc.returncode}): {proc.stderr[-800:]}")
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU.setdefault(tool, []).append(used)
    return seconds, proc.stdout


def power(sizes: list[int], repeats: int, reference_rows: int) -> list[dict[str, Any]]:
    """Flagged shifted windows and false alarms per window size (in-process)."""
    from mlrig.core.monitor import stats as drift_stats

    ref = frame(reference_rows, 7)
    ref_cols = {c: ref[c].to_numpy() for c in ref.columns}
    found = []
    for n in sizes:
        hits = alarms = 0
        for seed in range(repeats):
            moved = frame(n, 1000 + seed, shift=0.5, shifted=seed % FEATURES)
            rows = drift_stats.compare(ref_cols, {c: moved[c].to_numpy() for c in moved.columns})
            hits += bool(rows[seed % FEATURES].drifted)
            still = frame(n, 5000 + seed)
            rows = drift_stats.compare(ref_cols, {c: still[c].to_numpy() for c in still.columns})
            alarms += any(r.drifted for r in rows)
        found.append({"window": n, "flagged": hits, "false_alarms": alarms, "repeats": repeats})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--rows", type=int, default=50_000, help="reference rows")
    parser.add_argument("--window", type=int, default=10_000, help="live rows")
    parser.add_argument("--repeats", type=int, default=20, help="power test repeats")
    parser.add_argument("--evidently-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--keep", action="store_true", help="keep the stack and files")
    args = parser.parse_args()

    evidently = args.evidently_venv / "bin" / "python"
    if not evidently.exists():
        raise SystemExit(
            f"no Evidently venv at {args.evidently_venv}: python3.11 -m venv it and "
            'pip install evidently==0.7.23 "pandas<3" (a bench-only dependency)'
        )
    ev_version = subprocess.run(
        [str(evidently), "-c", "import evidently; print(evidently.__version__)"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    home, env = fresh_home("mlrig-monitor-bench-")
    meta = {**machine(("mlflow", "dvc", "numpy", "scipy")), "evidently": ev_version}
    try:
        up = timed(lambda: sh(home, MLRIG, "stack", "up", "--local", env=env))
        facts = setup(home, env, args.rows, args.window)
        out = home / "out"
        out.mkdir()

        def mlrig_monitor(i: int) -> float:
            report = out / f"mlrig-{i}.html"
            argv = [MLRIG, "monitor", ENDPOINT, "--since", "1h", "--repo", str(facts["repo"]),
                    "--report", str(report), "--json"]  # fmt: skip
            seconds, stdout = run_allowing(argv, env, (10,), "mlrig monitor")
            result = json.loads(stdout)
            assert result["rows"] == args.window and result["reference_rows"] == args.rows
            assert [c["column"] for c in result["columns"] if c["drifted"]] == ["f00"], result
            assert report.stat().st_size > 0
            return seconds

        def evidently_preset(i: int) -> float:
            report = out / f"evidently-{i}.html"
            argv = [str(evidently), str(HERE / "evidently_drift.py"), str(home / "reference.csv"),
                    str(home / "live.csv"), str(report)]  # fmt: skip
            seconds, _ = run_allowing(argv, env, (0,), "Evidently DataDriftPreset")
            assert report.stat().st_size > 0
            return seconds

        samples = interleave(
            {"mlrig monitor": mlrig_monitor, "Evidently DataDriftPreset": evidently_preset},
            args.samples,
        )
        meta["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        what = f"{args.rows // 1000}k x {FEATURES} reference vs {args.window // 1000}k window"
        rows = [
            row(f"drift report, {what}", "mlrig monitor", samples["mlrig monitor"]),
            row(f"drift report, {what}", "Evidently DataDriftPreset",
                samples["Evidently DataDriftPreset"]),
            *(
                row(f"CPU time (user + system), {what}", tool, CPU[tool], unit="CPU s")
                for tool in ("mlrig monitor", "Evidently DataDriftPreset")
            ),
            row("set-up: mlrig stack up --local", "mlrig", [up], method=WHOLE),
        ]  # fmt: skip
        sizes = sorted({args.window, 1000, 200})
        found = power(sizes, args.repeats, args.rows)
        for f in found:
            rows.append(row(f"0.5 σ shift in 1 of {FEATURES} flagged, window {f['window']}",
                            "mlrig monitor's decision", [float(f["flagged"])],
                            unit=f"of {args.repeats}", method=IN_PROCESS))  # fmt: skip
            rows.append(row(f"false alarms, no shift, window {f['window']}",
                            "mlrig monitor's decision", [float(f["false_alarms"])],
                            unit=f"of {args.repeats}", method=IN_PROCESS))  # fmt: skip
        median = rows[0]["median"]
        summary = [
            f"goal: mlrig monitor <= 3 s whole command: {'met' if median <= 3 else 'missed'} "
            f"({median:.2f} s median; Evidently {rows[1]['median']:.2f} s; CPU time "
            f"{rows[2]['median']:.2f} s vs {rows[3]['median']:.2f} s), load average "
            f"{meta['load_avg'][0]} at the start, {meta['load_avg_end'][0]} at the end on "
            f"{meta['cpus']} CPUs",
            *(
                f"power, window {f['window']}: {f['flagged']}/{f['repeats']} flagged (goal >= 19), "
                f"{f['false_alarms']}/{f['repeats']} false alarms (goal <= 1)"
                for f in found
            ),
        ]
        table = markdown(rows) + "\n\n" + "\n".join(f"- {s}" for s in summary)
        print(table)
        record(
            f"monitor-{utc_stamp()}",
            {"meta": {**meta, "settings": {**vars(args), "evidently_venv": str(evidently)}},
             "rows": rows, "summary": summary},
            table,
        )  # fmt: skip
    finally:
        if not args.keep:
            tear_down(home, env)


if __name__ == "__main__":
    main()
