"""`mlrig monitor ENDPOINT|REF`: the captured traffic of an endpoint (or of one model version)
since a time, compared with the exact DVC snapshot the served version was trained on (found
through provenance), per feature and for the predictions; logged as an MLflow run linked to the
version, printed or written as JSON and a self-contained HTML report.

`run_monitor` (in `monitor`) is the API another feature calls (the trainer's schedule); the
statistics are pure functions in `stats` (public: the benchmark and the trainer call them).
"""
