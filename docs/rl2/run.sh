#!/usr/bin/env bash
# Remake the RL^2 results of README's "RL^2" section: train (or resume and extend) each run, then
# evaluate it on held-out tasks. Usage: docs/rl2/run.sh [OUT_DIR]  (default: docs/rl2)
# Every step resumes: a killed run continues exactly where its last checkpoint left it.
set -euo pipefail
OUT="${1:-docs/rl2}"
run() {  # run NAME CONFIG EVAL_ARGS...
  local dir="$OUT/$1" config="$2"; shift 2
  if [ -f "$dir/checkpoint.pt" ] || [ -f "$dir/config.yaml" ]; then
    bmaml-train --config "$config" --out "$dir" --resume --quiet
  else
    bmaml-train --config "$config" --out "$dir" --quiet
  fi
  bmaml-eval "$dir" "$@"
}
run bandit-correlated-seed0 rl2-bandit --tasks 100 --episodes 4
run navigation-seed0 rl2-navigation --tasks 100 --episodes 4
run two-step-seed0 rl2-two-step --tasks 50 --episodes 2
run halfcheetah-vel-seed0 rl2-halfcheetah-vel --tasks 20 --episodes 2
# The robot's learning curve (first and last episode of each iteration's trials) for the README.
bmaml-compare "$OUT/halfcheetah-vel-seed0" --smooth 20 --last 50 --out "$OUT/halfcheetah-vel-curves"
