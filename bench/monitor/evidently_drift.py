"""Evidently's DataDriftPreset on two CSV files, its HTML report saved: the peer `mlrig monitor`
is timed beside. Run by the bench with Evidently's own venv (a bench-only dependency).

    python evidently_drift.py REFERENCE.csv CURRENT.csv REPORT.html
"""

from __future__ import annotations

import sys

import pandas as pd


def main() -> None:
    reference_csv, current_csv, out = sys.argv[1:4]
    reference, current = pd.read_csv(reference_csv), pd.read_csv(current_csv)
    try:  # evidently >= 0.7
        from evidently import Report
        from evidently.presets import DataDriftPreset

        snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
        snapshot.save_html(out)
    except ImportError:  # the legacy API
        from evidently.metric_preset import DataDriftPreset
        from evidently.report import Report

        report = Report(metrics=[DataDriftPreset()])
        report.run(reference_data=reference, current_data=current)
        report.save_html(out)


if __name__ == "__main__":
    main()
