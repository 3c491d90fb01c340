#!/usr/bin/env bash
# Fidelity report: this package's engine versus vLLM on the same random checkpoints
# (tests/integration/test_parity*.py), with one JSON line per case printed at the end.
#
#   bash scripts/parity-report.sh [extra pytest args]
#
# Needs the vLLM venv (scripts/setup-vllm-cpu.sh; DSOCR_VLLM_VENV points elsewhere), about
# 12 GB of memory, 3 GB of disk under pytest's temporary folder and 20-30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

report=${DSOCR_PARITY_REPORT:-$(mktemp --suffix=.jsonl)}
: > "$report"
status=0
DSOCR_PARITY_REPORT="$report" python -m pytest -q -m vllm \
  tests/integration/test_parity.py tests/integration/test_parity_preprocess.py "$@" || status=$?
echo "--- parity report ($report)"
cat "$report"
exit "$status"
