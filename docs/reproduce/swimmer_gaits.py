"""Does the best Swimmer gait depend on the medium? Open-loop sine gaits on SwimmerFluid.

Each env runs a = [sin(2 pi f t), sin(2 pi f t + phase)] (the policy's normalised actions clipped to
the robot's bounds) on a grid of frequencies and phases, in media of several densities (viscosity at
Swimmer-v5's 0.1). Printed per density: the best gait and its summed x-velocity (the task reward
without the control cost), and what the best gait of Swimmer-v5's own medium (density 4000) gets there.

    usage: PYTHONPATH=. python docs/reproduce/swimmer_gaits.py [STEPS]   (default 100)
"""

from __future__ import annotations

import sys

import numpy as np

import bmaml_robot as bm

FREQUENCIES = np.array([0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0])  # Hz
PHASES = np.linspace(0, 2 * np.pi, 8, endpoint=False)
DENSITIES = [10.0, 40.0, 200.0, 1000.0, 4000.0]  # kg/m^3; the last: Swimmer-v5's


def main(argv: list[str]) -> int:
    steps = int(argv[0]) if argv else 100
    grid = [(f, p, d) for d in DENSITIES for f in FREQUENCIES for p in PHASES]
    env = bm.make_vec("SwimmerFluid", len(grid), num_threads=2, seed=0, max_episode_steps=steps + 1)
    env.set_tasks([{"density": d} for _, _, d in grid])
    env.reset(seed=0)
    frequency, phase = np.array([g[0] for g in grid]), np.array([g[1] for g in grid])
    total = np.zeros(len(grid))
    for t in range(steps):
        angle = 2 * np.pi * frequency * t * env.dt
        _, _, _, _, info = env.step(np.stack([np.sin(angle), np.sin(angle + phase)], axis=1))
        total += info["x_velocity"]
    env.close()
    total = total.reshape(len(DENSITIES), len(FREQUENCIES), len(PHASES))
    water = np.unravel_index(np.argmax(total[-1]), total[-1].shape)
    print(f"open-loop sine gaits, {steps} steps: summed x-velocity")
    for i, density in enumerate(DENSITIES):
        best = np.unravel_index(np.argmax(total[i]), total[i].shape)
        print(f"density {density:7.1f}: best f {FREQUENCIES[best[0]]:.2f} Hz, phase {PHASES[best[1]]:.2f}: "
              f"{total[i].max():6.1f}; Swimmer-v5's best gait here: {total[i][water]:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
