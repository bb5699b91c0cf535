"""Byte-code for the modules of the distributions a requirements file names (not their
dependencies), written where PYTHONPYCACHEPREFIX points: run at the trainer image's build."""

import compileall
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution

NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def main(requirements: str) -> None:
    with open(requirements) as fh:
        names = [m.group(1) for m in map(NAME.match, fh) if m]
    for name in names:
        try:
            files = distribution(name).files or []
        except PackageNotFoundError:  # a requirement behind a marker this Python skips
            continue
        for file in files:
            if file.suffix == ".py":
                compileall.compile_file(str(file.locate()), quiet=2)


if __name__ == "__main__":
    main(sys.argv[1])
