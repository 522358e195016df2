"""Benchmarks as subcommands (repo root, venv active):

    python -m benchmarks pipeline --size-mb 25                       # `ray-jobs run` vs the same steps in a plain loop
    python -m benchmarks pipeline --size-mb 1100 --skip-plain        # Ray only
    python -m benchmarks pipeline --size-mb 25 --cores 2 --out /tmp/pipeline
    python -m benchmarks warc                                        # WARC -> text per core vs datatrove

Each command is a module with `main(argv)`; adding one is one line in COMMANDS. The older scripts in this folder
(`python benchmarks/dedup_bench.py ...`) still run on their own.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name -> module with main(argv: list[str]) -> int | None
    "pipeline": "benchmarks.pipeline_bench",
    "warc": "benchmarks.warc_bench",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__ + "\ncommands: " + ", ".join(COMMANDS), file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
