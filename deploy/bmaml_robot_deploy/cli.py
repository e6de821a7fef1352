"""``bmaml-control FILE --link sim|udp``: run an exported policy in a fixed-rate control loop.

    bmaml-control policy.onnx --link sim --episodes 1                 # MuJoCo, paced in real time
    bmaml-control policy.onnx --link sim --no-realtime --episodes 3   # as fast as it goes
    bmaml-control policy.onnx --link udp --udp-bind 0.0.0.0:9870 --udp-robot 192.168.1.20:9871
    bmaml-control policy.onnx --link udp --udp-robot 192.168.1.20:9871 --udp-key-file robot.key   # authenticated

``--link`` names how the controller reaches the robot (the simulator in this process, or a robot
over UDP); ``--expected-robot`` names the robot's body (e.g. ``HalfCheetah``). ``--robot`` is the
deprecated old name of ``--link``: it still works, with a note on stderr.

Prints the loop's statistics (``--json``: as one JSON object). Every argument is checked, and
the policy file loaded and checked, before the loop starts; problems are usage errors (exit 2).

An RL^2 file runs one trial (``--episodes``: its ``bmaml.episodes_per_trial`` to run one as in
training): the state is carried across episodes and the policy reads the robot's reward at every
step (``--link udp``: the robot must send version-2 observation packets; a version-1 packet ends
the run with exit 1 before it is acted on).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bmaml_robot_deploy import __version__
from bmaml_robot_deploy.checks import check_float, check_int
from bmaml_robot_deploy.controller import Controller
from bmaml_robot_deploy.loop import Robot, run_control_loop
from bmaml_robot_deploy.udp_link import DEFAULT_MAX_SEQUENCE_JUMP
from bmaml_robot_deploy.udp_wire import SEQ_MOD, add_key_arguments, cli_key, parse_address

if TYPE_CHECKING:  # imported where used: the simulator needs MuJoCo
    from bmaml_robot_deploy.sim import SimulatedRobot
    from bmaml_robot_deploy.udp_link import UdpRobot

DEFAULT_UDP_BIND = "0.0.0.0:9870"

#: The links ``--link`` chooses between: the MuJoCo simulator in this process, or a robot over UDP.
LINKS = ("sim", "udp")


class _DeprecatedRobotOption(argparse.Action):
    """``--robot``, the old name of ``--link``: sets ``link`` (and ``robot``, for code that read
    it) and says on stderr to use ``--link``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: --robot is deprecated, use --link {values} (--robot names the link, "
              "not the robot's body: that is --expected-robot)", file=sys.stderr)
        namespace.link = namespace.robot = values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmaml-control",
        description="Run an exported bmaml policy (ONNX) as a real-time controller of a simulated or UDP robot.",
    )
    parser.add_argument("file", help="policy file written by bmaml-export")
    link = parser.add_mutually_exclusive_group(required=True)
    link.add_argument("--link", choices=LINKS, default=None,
                      help="how the controller reaches the robot: sim, the MuJoCo robot of the file's task in this "
                           "process (needs bmaml-robot); udp, a robot over UDP")
    link.add_argument("--robot", choices=LINKS, default=None, action=_DeprecatedRobotOption, help=argparse.SUPPRESS)
    parser.add_argument(
        "--steps", type=int, default=1000, help="control steps to run (default 1000; 0 with --episodes: no limit)"
    )
    parser.add_argument("--episodes", type=int, default=None, help="stop after this many episodes ended")
    parser.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pace the loop at the control rate (default); --no-realtime runs steps back to back",
    )
    parser.add_argument("--rate-hz", type=float, default=None, help="control rate (default: 1 / the file's control_dt)")
    parser.add_argument(
        "--safe-action",
        default=None,
        help="action for non-finite observations and the watchdog, comma-separated act_dim numbers (default zeros)",
    )
    parser.add_argument("--expected-robot", default=None, help="refuse a file for another robot, e.g. HalfCheetah")
    sim = parser.add_argument_group("--link sim")
    sim.add_argument("--seed", type=int, default=0, help="reset-noise seed (default 0)")
    sim.add_argument(
        "--max-episode-steps",
        type=int,
        default=None,
        help="episode time limit in steps (default: the file's training horizon, bmaml.horizon; "
        "1000 for a file without one)",
    )
    udp = parser.add_argument_group("--link udp")
    udp.add_argument(
        "--udp-bind", default=DEFAULT_UDP_BIND, help=f"local HOST:PORT for observations (default {DEFAULT_UDP_BIND})"
    )
    udp.add_argument(
        "--udp-robot",
        default=None,
        help="robot HOST:PORT for actions; only its packets are accepted "
        "(default: the sender of the first valid observation, pinned for the session)",
    )
    add_key_arguments(udp, "the robot")
    udp.add_argument(
        "--udp-max-sequence-jump",
        type=int,
        default=DEFAULT_MAX_SEQUENCE_JUMP,
        metavar="N",
        help="drop observations whose sequence is more than N past the last accepted one "
        f"(default {DEFAULT_MAX_SEQUENCE_JUMP})",
    )
    udp.add_argument(
        "--watchdog-timeout",
        type=float,
        default=None,
        help="seconds without observations before the safe action is sent (default two control periods)",
    )
    udp.add_argument(
        "--wait-for-robot",
        type=float,
        default=30.0,
        help="seconds to wait for the robot's first observation before starting (default 30)",
    )
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _parse_safe_action(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError:
        raise ValueError(f"--safe-action: expected comma-separated numbers, got {text!r}") from None
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The robot, and the same object under its link's type (None for the other link).
    robot: Robot
    sim_robot: SimulatedRobot | None = None
    udp_robot: UdpRobot | None = None
    try:
        check_int(args.steps, "--steps", minimum=0)
        if args.episodes is not None:
            check_int(args.episodes, "--episodes", minimum=1)
        if args.steps == 0 and args.episodes is None:
            raise ValueError("--steps: 0 (no limit) needs --episodes")
        if args.max_episode_steps is not None:
            check_int(args.max_episode_steps, "--max-episode-steps", minimum=1)
        if args.rate_hz is not None:
            check_float(args.rate_hz, "--rate-hz", low=0, low_open=True, what="a number")
        if args.watchdog_timeout is not None:
            check_float(args.watchdog_timeout, "--watchdog-timeout", low=0, low_open=True, what="seconds")
        check_float(args.wait_for_robot, "--wait-for-robot", low=0, what="seconds")
        bind = parse_address(args.udp_bind, "--udp-bind")
        robot_address = None if args.udp_robot is None else parse_address(args.udp_robot, "--udp-robot")
        if robot_address is not None and robot_address[1] == 0:
            raise ValueError(f"--udp-robot: expected HOST:PORT with a port in [1, 65535], got {args.udp_robot!r}")
        check_int(args.udp_max_sequence_jump, "--udp-max-sequence-jump", minimum=1, maximum=SEQ_MOD // 2 - 1)
        key = cli_key(args.udp_key_file, args.udp_key_env)
        safe_action = _parse_safe_action(args.safe_action)
        try:
            controller = Controller(args.file, safe_action=safe_action, expected_robot=args.expected_robot)
        except ValueError as error:
            message = str(error)
            if message.startswith("safe_action"):
                message = "--" + message.replace("_", "-", 1)
            raise ValueError(message) from None
        if args.link == "sim":
            from bmaml_robot_deploy.sim import SimulatedRobot

            robot = sim_robot = SimulatedRobot.for_policy(
                controller.metadata, seed=args.seed, max_episode_steps=args.max_episode_steps
            )
        else:
            from bmaml_robot_deploy.udp_link import UdpRobot

            options = {} if args.watchdog_timeout is None else {"watchdog_timeout": args.watchdog_timeout}
            robot = udp_robot = UdpRobot.for_controller(
                controller,
                bind=bind,
                robot_address=robot_address,
                key=key,
                max_sequence_jump=args.udp_max_sequence_jump,
                **options,
            )
    except (ValueError, TypeError, ImportError) as error:
        parser.error(str(error))

    try:
        print(controller, file=sys.stderr)
        if controller.rl2:
            print(
                f"bmaml-control: RL^2 policy: the run is one trial, the state carried across episodes "
                f"(trained on trials of {controller.metadata.episodes_per_trial} episodes: --episodes "
                f"{controller.metadata.episodes_per_trial} runs one)",
                file=sys.stderr,
            )
        if sim_robot is not None:  # --link sim
            print(
                f"bmaml-control: simulated {controller.metadata.family}, episodes of at most "
                f"{sim_robot.max_episode_steps} steps",
                file=sys.stderr,
            )
        if udp_robot is not None:  # --link udp
            host, port = udp_robot.address
            auth = "authenticated" if udp_robot.authenticated else "unauthenticated"
            print(
                f"bmaml-control: listening on {host}:{port} ({auth}), waiting for the robot...",
                file=sys.stderr,
                flush=True,
            )
            if not udp_robot.wait_for_robot(args.wait_for_robot):
                print(f"bmaml-control: no observation from the robot within {args.wait_for_robot} s", file=sys.stderr)
                return 1
        try:
            stats = run_control_loop(
                controller,
                robot,
                rate_hz=args.rate_hz,
                steps=None if args.steps == 0 else args.steps,
                max_episodes=args.episodes,
                realtime=args.realtime,
            )
        except ValueError as error:  # an RL^2 policy and a robot that does not report rewards
            print(f"bmaml-control: {error}", file=sys.stderr)
            return 1
    finally:
        robot.close()
    if args.json:
        report = stats.to_dict()
        if udp_robot is not None:
            report["udp"] = udp_robot.counters()
        print(json.dumps(report))
    else:
        print(stats.summary())
        if udp_robot is not None:
            print("udp: " + ", ".join(f"{k} {v}" for k, v in udp_robot.counters().items()))
    return 130 if stats.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
