#!/usr/bin/env bash
# Learning curves (bmaml-compare, one folder per family) and the table (make_table.py) of the
# reproduction runs in RUNS_DIR (default docs/reproduce). Run after run_reproduction.sh.
set -euo pipefail
RUNS=${1:-docs/reproduce}
for config in halfcheetah-dir halfcheetah-vel ant-dir ant-vel ant-goal swimmer-dir swimmer-vel 2d-navigation \
              halfcheetah-crippled swimmer-fluid halfcheetah-mass ant-crippled hopper-params walker2d-params; do
  runs=("$RUNS/$config"-seed*)
  [ -s "${runs[0]}/metrics.jsonl" ] || continue  # not started yet
  ${BMAML_COMPARE:-bmaml-compare} "${runs[@]}" --last 10 --smooth 5 --out "$RUNS/curves/$config" > /dev/null
  echo "curves: $RUNS/curves/$config/curves.png"
done
${PYTHON:-python} "$(dirname "$0")/make_table.py" "$RUNS"
