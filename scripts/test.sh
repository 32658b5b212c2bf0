#!/usr/bin/env bash
# Install raystudy with its test and dev extras (and Chromium for the report's browser test), run the checks
# (scripts/check.sh), then the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing Chromium for the report's browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped"
fi
python -m pip install -q -e ".[test,dev]"
bash scripts/check.sh  # lint, format, types, architecture contracts: before the tests
python -m pytest -q --timeout=1200 --durations=25 "$@"  # the slowest tests land in the CI log
