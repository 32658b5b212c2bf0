"""The label-efficiency scaling study: ``python studies/scaling.py [--preset smoke|demo|paper]``.

Runs (or resumes) pretraining, the grid of train sizes x folds x category sets x
model types, and writes the Parquet results and ``report.html`` to the run
folder (default ``runs/<study name>``). ``--data DIR`` points it at real images.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raystudy.cli import main  # noqa: E402 - after the checkout is put on sys.path

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]], default_preset="demo"))
