#!/usr/bin/env bash
# The reproduction table of the README: the MLP meta-policy of every family, trained with the
# shipped configs (MAML-TRPO, second order, the benchmark's batch unless BATCH_<FAMILY> says
# otherwise), then evaluated on held-out tasks after 0..3 adaptation steps. Resumable: run it
# again, with a larger ITERS to extend the runs, and every run continues from its checkpoint;
# an evaluation is redone only when its run has moved on (the untrained policy's, in RUN/initial,
# is made once).
#   usage: docs/reproduce/run_reproduction.sh [RUNS_DIR]   (default docs/reproduce)
#   env: ITERS=60 meta-iterations, JOBS=2 parallel runs, ONLY="halfcheetah-dir:0 ant-dir:0" a subset,
#        SMALL_BATCH=20x10 tasks x episodes of the Ant families and of the families that change the
#        robot's body or medium (empty: the config's 40 x 20),
#        BMAML_TRAIN / BMAML_EVAL the commands (default bmaml-train / bmaml-eval),
#        EVAL_TASKS=40 EVAL_EPISODES=20 the held-out evaluation's size.
set -euo pipefail
RUNS=${1:-docs/reproduce}
JOBS=${JOBS:-2}
ITERS=${ITERS:-60}
# config:seed, in the order they run (the two-seed families first).
DEFAULT_RUNS="halfcheetah-dir:0 halfcheetah-dir:1 halfcheetah-vel:0 halfcheetah-vel:1 swimmer-dir:0 swimmer-vel:0
2d-navigation:0 ant-dir:0 ant-vel:0 ant-goal:0
halfcheetah-crippled:0 halfcheetah-crippled:1 swimmer-fluid:0 swimmer-fluid:1"
ONLY=${ONLY:-$DEFAULT_RUNS}

run_one() {  # config seed
  local out="$RUNS/$1-seed$2" resume=() batch=()
  [ -e "$out/config.yaml" ] && resume=(--resume)
  # The Ant's contact-rich physics makes its 40 x 20 batch ~6 minutes per meta-iteration on this
  # shared 2-core machine (and ~1 minute alone): its families, and those that change the body or
  # the medium (added later, with less machine time), run at SMALL_BATCH tasks x episodes.
  local small=${SMALL_BATCH-20x10}
  case "$1" in ant-*|*-crippled|*-mass|*-params|*-fluid) [ -n "$small" ] &&
    batch=(--set "num_tasks=${small%%x*}" --set "episodes_per_task=${small##*x}") ;; esac
  if ${BMAML_TRAIN:-bmaml-train} --config "$1" --seed "$2" --num-iterations "$ITERS" --num-threads 1 \
       --out "$out" --quiet "${batch[@]}" "${resume[@]}"; then
    # Evaluate the run's policy where it stands, unless eval.json already saw that iteration.
    local trained
    trained=$(wc -l < "$out/metrics.jsonl")
    if ! grep -q "\"iterations_trained\": $trained," "$out/eval.json" 2>/dev/null; then
      ${BMAML_EVAL:-bmaml-eval} "$out" --adapt-steps 3 --tasks "${EVAL_TASKS:-40}" --episodes "${EVAL_EPISODES:-20}" \
        > "$out/eval.txt"
    fi
    # The same architecture and seed at initialisation: what meta-training must beat (once per run).
    if [ ! -e "$out/initial/eval.json" ]; then
      mkdir -p "$out/initial"
      ${BMAML_EVAL:-bmaml-eval} "$out" --initial --adapt-steps 3 --tasks "${EVAL_TASKS:-40}" \
        --episodes "${EVAL_EPISODES:-20}" > "$out/initial/eval.txt"
    fi
    echo "done $out"
  else
    echo "FAILED $out"
  fi
}
export -f run_one
export RUNS ITERS
for item in $ONLY; do echo "${item%%:*} ${item##*:}"; done | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
