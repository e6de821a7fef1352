"""A MuJoCo robot served over UDP: the robot side of the bridge, as a separate simulator process.

    python -m bmaml_robot_deploy.udp_sim --policy policy.onnx --controller 127.0.0.1:9870 --episodes 1
    python -m bmaml_robot_deploy.udp_sim ... --udp-key-file robot.key     # authenticated packets

It simulates the robot and task of a policy file (or ``--family``/``--task``), sends an
observation packet for every step and applies the action packet that answers it (layout in
:mod:`bmaml_robot_deploy.udp_wire`), so that ``bmaml-control FILE --link udp`` can be tried, and is
tested, end to end without hardware. Needs the main package (``pip install bmaml-robot``).
Observation packets are version 2 (with the reward of each step, as RL^2 policies need);
``--observation-version 1`` sends the first layout. With ``--record out.npz`` it saves what it saw
(observations, the rewards sent with them, actions; time first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from bmaml_robot_deploy.checks import check_int
from bmaml_robot_deploy.metadata import PolicyMetadata
from bmaml_robot_deploy.sim import DEFAULT_MAX_EPISODE_STEPS, default_episode_steps
from bmaml_robot_deploy.udp_server import ServerStats, UdpRobotServer
from bmaml_robot_deploy.udp_wire import (
    MAX_U32,
    OBSERVATION_MAGICS,
    OBSERVATION_VERSION,
    add_key_arguments,
    cli_key,
    parse_address,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bmaml_robot_deploy.udp_sim",
        description="Simulate a robot (MuJoCo) and serve it to a controller over the bmaml UDP bridge.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", help="policy file whose robot and task to simulate")
    source.add_argument("--family", help="task family, e.g. HalfCheetahDir (with --task)")
    parser.add_argument("--task", help='task as JSON, e.g. \'{"direction": -1.0}\' (with --family)')
    parser.add_argument("--controller", required=True, help="HOST:PORT of the controller (bmaml-control --udp-bind)")
    parser.add_argument("--bind", default="127.0.0.1:0", help="local HOST:PORT (default 127.0.0.1:0, any port)")
    parser.add_argument("--episodes", type=int, default=None, help="stop after this many episodes")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument(
        "--max-episode-steps",
        type=int,
        default=None,
        help="episode time limit in steps (default: the --policy file's training horizon; 1000 without one)",
    )
    parser.add_argument("--seed", type=int, default=0, help="reset-noise seed (default 0)")
    parser.add_argument("--action-timeout", type=float, default=0.5, help="seconds before re-sending an observation")
    parser.add_argument(
        "--linger", type=float, default=0.0, help="seconds to keep counting watchdog packets after the last step"
    )
    parser.add_argument("--record", help="save observations, rewards, actions and returns to this .npz file")
    parser.add_argument(
        "--observation-version",
        type=int,
        choices=sorted(OBSERVATION_MAGICS),
        default=OBSERVATION_VERSION,
        help=f"observation packet version (default {OBSERVATION_VERSION}: with the reward; 1: the first layout, "
        "without it, for older controllers)",
    )
    add_key_arguments(parser, "the controller")
    parser.add_argument(
        "--first-sequence",
        type=int,
        default=1,
        help="sequence of the first observation (default 1; with a key, counted within a session "
        "(each start is a new session: any value works))",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.policy is not None:
            if args.task is not None:
                raise ValueError("--task: the task comes from --policy; give one or the other")
            meta = PolicyMetadata.from_onnx(args.policy)
            family, task = meta.family, meta.task
            if args.max_episode_steps is None:
                args.max_episode_steps = default_episode_steps(meta)
        else:
            if args.task is None:
                raise ValueError("--task: required with --family")
            family = args.family
            try:
                task = json.loads(args.task)
            except ValueError as error:
                raise ValueError(f"--task: expected a JSON object, got {args.task!r} ({error})") from None
            if not isinstance(task, dict):
                raise ValueError(f"--task: expected a JSON object, got {args.task!r}")
        if args.max_episode_steps is None:
            args.max_episode_steps = DEFAULT_MAX_EPISODE_STEPS
        check_int(args.max_episode_steps, "--max-episode-steps", minimum=1)
        if args.episodes is None and args.steps is None:
            raise ValueError("--episodes/--steps: give at least one limit")
        for name in ("episodes", "steps"):
            if getattr(args, name) is not None:
                check_int(getattr(args, name), f"--{name}", minimum=1)
        controller = parse_address(args.controller, "--controller")
        if controller[1] == 0:
            raise ValueError(f"--controller: expected HOST:PORT with a port in [1, 65535], got {args.controller!r}")
        bind = parse_address(args.bind, "--bind")
        check_int(args.first_sequence, "--first-sequence", minimum=0, maximum=MAX_U32)
        key = cli_key(args.udp_key_file, args.udp_key_env)
        from bmaml_robot_deploy.sim import SimulatedRobot

        robot = SimulatedRobot(family, task, seed=args.seed, max_episode_steps=args.max_episode_steps)
    except (ValueError, TypeError, ImportError) as error:
        parser.error(str(error))

    def reset() -> np.ndarray:
        return robot.read_observation()  # the simulator has already started the next episode

    def step(action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        robot.send_action(action)
        return robot.read_observation(), robot.last_reward, robot.last_terminated, robot.last_truncated

    try:
        with UdpRobotServer(
            controller,
            robot.obs_dim,
            robot.act_dim,
            bind=bind,
            key=key,
            first_sequence=args.first_sequence,
            action_timeout=args.action_timeout,
            observation_version=args.observation_version,
        ) as server:
            auth = "authenticated" if key is not None else "unauthenticated"
            print(
                f"udp_sim: {family} {task} on {server.address[0]}:{server.address[1]} -> "
                f"{controller[0]}:{controller[1]} "
                f"({auth})",
                flush=True,
            )
            stats = server.run(
                reset,
                step,
                steps=args.steps,
                episodes=args.episodes,
                linger_s=args.linger,
                record=args.record is not None,
            )
    finally:
        robot.close()
    print(
        f"udp_sim: steps {stats.steps}, episodes {stats.episodes}, returns {stats.episode_returns}, "
        f"resends {stats.resends}, dropped {stats.dropped} (unauthenticated {stats.dropped_unauthenticated}, "
        f"unknown sender {stats.dropped_unknown_sender}), watchdog packets after stop "
        f"{stats.watchdog_actions_after_stop}",
        flush=True,
    )
    if args.record is not None:
        save_record(args.record, stats)
    return 0


def save_record(path: str, stats: ServerStats) -> None:
    """Write ``stats`` to ``path`` (.npz) atomically: ``observations [T, obs_dim]``, ``rewards [T]``
    (sent with them), ``actions [T, act_dim]``, ``action_flags [T]``, ``episode_returns``,
    ``episode_lengths`` and the counters."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".udp_sim.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                observations=np.asarray(stats.observations, np.float32),
                rewards=np.asarray(stats.rewards, np.float32),
                actions=np.asarray(stats.actions, np.float32),
                action_flags=np.asarray(stats.action_flags, np.int64),
                episode_returns=np.asarray(stats.episode_returns, np.float64),
                episode_lengths=np.asarray(stats.episode_lengths, np.int64),
                steps=stats.steps,
                episodes=stats.episodes,
                resends=stats.resends,
                dropped=stats.dropped,
                dropped_unauthenticated=stats.dropped_unauthenticated,
                dropped_unknown_sender=stats.dropped_unknown_sender,
                watchdog_actions_after_stop=stats.watchdog_actions_after_stop,
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


if __name__ == "__main__":
    sys.exit(main())
