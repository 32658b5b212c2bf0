"""``python -m analysis RUN_DIR [--out FILE]``: rebuild a run's report."""

from __future__ import annotations

import argparse
import sys

from analysis.report import build_report
from raystudy.storage import as_location


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="Build RUN_DIR/report.html.")
    parser.add_argument("run_dir", help="run folder or URI (s3://...) with config.yaml and results/")
    parser.add_argument("--out", default=None, help="output file or URI (default RUN_DIR/report.html)")
    args = parser.parse_args(argv)
    if not as_location(args.run_dir).is_dir():
        parser.error(f"{args.run_dir} is not a folder")
    print(build_report(args.run_dir, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
