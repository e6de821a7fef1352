#!/usr/bin/env bash
# The study's comparisons (issue 17), from the runs of run_study.sh: per family, the MAML variants
# per meta-iteration (claims 1, 2, 4: bmaml-compare's Welch tests with power statements, variance
# tests across seeds, held-out evaluations; claim 2's spreads across episodes, tasks, iterations:
# claim2.py), MAML against RL^2 at equal environment steps (claim 5: training
# curves by bmaml-compare, held-out returns by claim5.py), the
# small frozen RNN against the default one (claim 3), and whether each variant's curve has settled
# (settled.py), the verdict on each claim (verdicts.py -> OUT/verdicts.md: what README quotes) and the
# compute used (compute.py -> OUT/compute.md).
# Each family is compared at one budget (study_runs.py): runs extended further count with their
# evaluation and curve at it; runs not yet evaluated at it are left out.
#   usage: docs/study/make_report.sh [RUNS_DIR] [OUT_DIR]   (default docs/study/runs docs/study)
set -euo pipefail
shopt -s nullglob
RUNS=${1:-docs/study/runs}
OUT=${2:-docs/study}
COMPARE=${BMAML_COMPARE:-bmaml-compare}
MAML="maml-mlp maml-rnn-frozen maml-rnn-outer maml-gru-outer maml-lstm-outer"
for family in ${FAMILIES:-HalfCheetahDir SwimmerDir HalfCheetahCrippled}; do
  [ -d "$RUNS/$family" ] || continue
  evals="$OUT/$family/evals"  # links to each compared run's evaluation at the family's budget
  # "BUDGET ENV_STEPS", then the family's runs at that budget, their evaluations at it linked
  # as $evals/<run>/eval.json (bmaml-compare --eval-dir); every comparison ends at the budget
  mapfile -t runs < <(${PYTHON:-python} "$(dirname "$0")/study_runs.py" "$RUNS/$family" "$evals")
  [ ${#runs[@]} -gt 1 ] || continue
  read -r budget steps <<< "${runs[0]}"
  runs=("${runs[@]:1}")
  maml=() rl2=() small=() frozen=()
  for run in "${runs[@]}"; do
    case "${run##*/}" in
      maml-rnn-frozen-small-seed*) small+=("$run") ;;
      maml-rnn-frozen-seed*) frozen+=("$run"); maml+=("$run") ;;
      maml-*) maml+=("$run") ;;
      rl2-*) rl2+=("$run") ;;
    esac
  done
  [ ${#maml[@]} -gt 1 ] || continue
  ${PYTHON:-python} "$(dirname "$0")/settled.py" "$RUNS/$family" > "$OUT/$family/settled.md"
  ${PYTHON:-python} "$(dirname "$0")/claim2.py" "$RUNS/$family" > "$OUT/$family/claim2.md"
  echo "$OUT/$family/settled.md"
  echo "$OUT/$family/claim2.md"
  $COMPARE "${maml[@]}" --group-by policy,recurrence --last 10 --until "$budget" --eval-dir "$evals" --out "$OUT/$family/maml" > /dev/null
  echo "$OUT/$family/maml/report.md"
  if [ ${#rl2[@]} -gt 0 ]; then
    # Training curves at equal env steps; the held-out evaluations differ in kind (MAML: episodes
    # after k gradient steps; RL^2: episodes of a trial), so bmaml-compare gets none here (an empty
    # --eval-dir) and the held-out numbers are compared from each run's eval.json in the report.
    mkdir -p "$OUT/$family/maml-vs-rl2/no-eval"
    $COMPARE "${maml[@]}" "${rl2[@]}" --x-axis env-steps --until "$steps" --group-by algorithm,policy,recurrence --last 10 \
      --eval-dir "$OUT/$family/maml-vs-rl2/no-eval" --out "$OUT/$family/maml-vs-rl2" > /dev/null
    echo "$OUT/$family/maml-vs-rl2/report.md"
    ${PYTHON:-python} "$(dirname "$0")/claim5.py" "$RUNS/$family" > "$OUT/$family/claim5.md"
    echo "$OUT/$family/claim5.md"
  fi
  if [ ${#small[@]} -gt 0 ]; then
    # Claim 3 per iteration is claim3.py's; this report shows it per environment step (the small
    # batch takes a quarter of the steps per iteration), up to the small runs' budget.
    small_steps=$(( budget * $(head -1 "${small[0]}/metrics.jsonl" | grep -o '"env_steps": [0-9]*' | grep -o '[0-9]*$') ))
    $COMPARE "${frozen[@]}" "${small[@]}" --x-axis env-steps --until "$small_steps" --group-by hidden_size,num_tasks \
      --last 10 --eval-dir "$evals" --out "$OUT/$family/small" > /dev/null
    echo "$OUT/$family/small/report.md"
    ${PYTHON:-python} "$(dirname "$0")/claim3.py" "$RUNS/$family" > "$OUT/$family/small/claim3.md"
    echo "$OUT/$family/small/claim3.md"
  fi
done
${PYTHON:-python} "$(dirname "$0")/verdicts.py" "$RUNS" > "$OUT/verdicts.md"
${PYTHON:-python} "$(dirname "$0")/compute.py" "$RUNS" > "$OUT/compute.md"
echo "$OUT/verdicts.md"
echo "$OUT/compute.md"
