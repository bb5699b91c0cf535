"""What every demo step is handed: the stack, the working folder, the log and the facts
the summary prints (demo.py runs the steps; demo_retrain.py holds the retraining ones)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlrig.errors import MlrigError

PROJECT = "demo_model"


class StepFailed(MlrigError):
    exit_code = 8


@dataclass
class DemoContext:
    stack: str
    workdir: Path
    log_file: Path
    facts: dict[str, str] = field(default_factory=dict)  # what the summary prints
    # what steps hand each other that no summary or log may show (the endpoint's key)
    private: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def repo(self) -> Path:
        """The demo's repository (`mlrig init` makes it in the working folder)."""
        return self.workdir / PROJECT.replace("_", "-")

    def log(self, text: str) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {text}\n")
