#!/usr/bin/env bash
# The variant study of the README: MLP vs RNN-frozen vs RNN-outer vs GRU-outer, 3 seeds each, on
# Navigation2D and HalfCheetahDir. Runs are resumable: run the script again (with a larger
# NAV_ITERS / CHEETAH_ITERS to extend them) and every run continues from its last checkpoint.
#   usage: docs/study/run_study.sh [RUNS_DIR]    (env: JOBS=2 parallel runs, SEEDS="0 1 2",
#   BMAML_TRAIN=the training command, VARIANTS="mlp:frozen gru:outer" a subset of the variants,
#   FAMILIES="nav" a subset of the families)
set -euo pipefail
RUNS=${1:-runs/study}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-0 1 2}
NAV_ITERS=${NAV_ITERS:-100}
CHEETAH_ITERS=${CHEETAH_ITERS:-150}
VARIANTS=${VARIANTS:-mlp:frozen rnn:frozen rnn:outer gru:outer}

FAMILIES=${FAMILIES:-nav hcdir}
for family in $FAMILIES; do
  case $family in nav|hcdir) ;; *) echo "FAMILIES: expected nav and/or hcdir, got $family" >&2; exit 2 ;; esac
done

jobs_list() {
  for family in $FAMILIES; do
    case $family in
      nav) config=2d-navigation iterations=$NAV_ITERS ;;
      hcdir) config=halfcheetah-dir iterations=$CHEETAH_ITERS ;;
    esac
    for seed in $SEEDS; do for v in $VARIANTS; do
      echo "$config ${v%%:*} ${v##*:} $seed $iterations $family"
    done; done
  done
}

run_one() {  # config policy recurrence seed iterations prefix
  local out="$RUNS/$6-$2-$3-seed$4" resume=()
  [ -e "$out/config.yaml" ] && resume=(--resume)
  ${BMAML_TRAIN:-bmaml-train} --config "$1" --policy "$2" --recurrence "$3" --seed "$4" --num-iterations "$5" \
    --num-threads 1 --set num_tasks=20 --set episodes_per_task=10 --out "$out" --quiet "${resume[@]}" \
    && echo "done $out" || echo "FAILED $out"
}
export -f run_one
export RUNS
jobs_list | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
