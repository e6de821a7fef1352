#!/usr/bin/env bash
# The study's comparisons (issue 17), from the runs of run_study.sh: per family, the MAML variants
# per meta-iteration (claims 1, 2, 4: bmaml-compare's Welch tests with power statements, variance
# tests across seeds, held-out evaluations; claim 2's spreads across episodes, tasks, iterations:
# claim2.py), MAML against RL^2 at equal environment steps (claim 5: training
# curves by bmaml-compare, held-out returns by claim5.py), the
# small frozen RNN against the default one (claim 3), and whether each variant's curve has settled
# (settled.py), the verdict on each claim (verdicts.py -> OUT/verdicts.md: what README quotes) and the
# compute used (compute.py -> OUT/compute.md).
# Only runs evaluated at their latest iteration (finished ones) are compared.
#   usage: docs/study/make_report.sh [RUNS_DIR] [OUT_DIR]   (default docs/study/runs docs/study)
set -euo pipefail
shopt -s nullglob
RUNS=${1:-docs/study/runs}
OUT=${2:-docs/study}
COMPARE=${BMAML_COMPARE:-bmaml-compare}
MAML="maml-mlp maml-rnn-frozen maml-rnn-outer maml-gru-outer maml-lstm-outer"
started() {  # the run directories given that are evaluated at their latest iteration (PARTIAL=1: any begun)
  for run in "$@"; do
    [ -s "$run/metrics.jsonl" ] || continue
    if [ -n "${PARTIAL:-}" ] || grep -q "\"iterations_trained\": $(($(wc -l < "$run/metrics.jsonl")))," "$run/eval.json" 2>/dev/null
    then printf '%s\n' "$run"; fi
  done
}
for family in ${FAMILIES:-HalfCheetahDir SwimmerDir HalfCheetahCrippled}; do
  maml=() rl2=()
  for variant in $MAML; do mapfile -t -O ${#maml[@]} maml < <(started "$RUNS/$family/$variant"-seed*); done
  mapfile -t rl2 < <(started "$RUNS/$family"/rl2-gru-seed* "$RUNS/$family"/rl2-gru-frozen-seed*)
  [ ${#maml[@]} -gt 1 ] || continue
  mkdir -p "$OUT/$family"
  ${PYTHON:-python} "$(dirname "$0")/settled.py" "$RUNS/$family" > "$OUT/$family/settled.md"
  ${PYTHON:-python} "$(dirname "$0")/claim2.py" "$RUNS/$family" > "$OUT/$family/claim2.md"
  echo "$OUT/$family/settled.md"
  echo "$OUT/$family/claim2.md"
  $COMPARE "${maml[@]}" --group-by policy,recurrence --last 10 --out "$OUT/$family/maml" > /dev/null
  echo "$OUT/$family/maml/report.md"
  if [ ${#rl2[@]} -gt 0 ]; then
    # Training curves at equal env steps; the held-out evaluations differ in kind (MAML: episodes
    # after k gradient steps; RL^2: episodes of a trial), so bmaml-compare gets none here (an empty
    # --eval-dir) and the held-out numbers are compared from each run's eval.json in the report.
    mkdir -p "$OUT/$family/maml-vs-rl2/no-eval"
    $COMPARE "${maml[@]}" "${rl2[@]}" --x-axis env-steps --group-by algorithm,policy,recurrence --last 10 \
      --eval-dir "$OUT/$family/maml-vs-rl2/no-eval" --out "$OUT/$family/maml-vs-rl2" > /dev/null
    echo "$OUT/$family/maml-vs-rl2/report.md"
    ${PYTHON:-python} "$(dirname "$0")/claim5.py" "$RUNS/$family" > "$OUT/$family/claim5.md"
    echo "$OUT/$family/claim5.md"
  fi
done
mapfile -t small < <(started "$RUNS"/HalfCheetahDir/maml-rnn-frozen-small-seed*)
if [ ${#small[@]} -gt 0 ]; then
  $COMPARE $(started "$RUNS"/HalfCheetahDir/maml-rnn-frozen-seed*) "${small[@]}" --group-by hidden_size,num_tasks --last 10 \
    --out "$OUT/HalfCheetahDir/small" > /dev/null
  echo "$OUT/HalfCheetahDir/small/report.md"
  ${PYTHON:-python} "$(dirname "$0")/claim3.py" "$RUNS/HalfCheetahDir" > "$OUT/HalfCheetahDir/small/claim3.md"
fi
${PYTHON:-python} "$(dirname "$0")/verdicts.py" "$RUNS" > "$OUT/verdicts.md"
${PYTHON:-python} "$(dirname "$0")/compute.py" "$RUNS" > "$OUT/compute.md"
echo "$OUT/verdicts.md"
echo "$OUT/compute.md"
