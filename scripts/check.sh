#!/usr/bin/env bash
# The checks that run before the tests, in CI and before every commit:
# merge-conflict markers and trailing whitespace in tracked files, ruff (lint + format),
# mypy on raystudy/ and analysis/, and the import-linter architecture contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0

# tracked text files only (git grep skips binaries with -I)
if git grep -nI -E '^(<<<<<<<|>>>>>>>)( |$)|^=======$' -- . ':(exclude)*.ipynb'; then
  echo "check: unresolved merge-conflict markers (above)" >&2
  status=1
fi
if git grep -nI -E '[[:blank:]]+$' -- .; then
  echo "check: trailing whitespace (above); strip it" >&2
  status=1
fi

ruff check . || status=1
ruff format --check . || { echo "check: run 'ruff format .'" >&2; status=1; }
mypy || status=1
lint-imports || status=1

exit $status
