"""The fixed-rate control loop and the robot interface it drives.

``run_control_loop(controller, robot)`` runs at the policy's control rate (``1 / control_dt``):
at every tick it reads the robot's latest observation, asks the controller for the action and
sends it. Ticks are released on an absolute grid ``t0 + k / rate_hz`` measured with
``time.perf_counter``, so the loop never drifts: a late tick does not delay the grid. A tick
whose work (read + act + send) ends after the next tick's release is a *deadline miss*; grid
slots that passed entirely during an overrun are skipped (counted), and the loop goes on at the
next slot. Sleeping is ``time.sleep`` until shortly before the release, then a short spin
(``spin_s``) for precision.

RL^2 controllers (``controller.needs_reward``) adapt in their activations: the run is one trial
(``new_trial``: it starts with ``controller.reset()``), the state is carried across episodes, and
at every tick the controller gets the robot's reward of the last step (``robot.last_reward``: the
robot must report it, see :class:`RewardRobot`) and whether the observation starts an episode
(``robot.new_episode``). MAML controllers are reset at every new episode, as before.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bmaml_robot_deploy.checks import check_float, check_int, check_seconds


@runtime_checkable
class Robot(Protocol):
    """What the control loop needs from a robot (simulated, over UDP, or your own driver).

    ``read_observation`` returns the newest observation ``[obs_dim]`` (any real dtype), or
    ``None`` when none is available this tick (the loop then sends nothing; a robot with a
    watchdog handles its own safe behaviour). After a read, ``new_episode`` is True when that
    observation is the first of a new episode (the loop then resets a MAML controller's hidden
    state before acting; an RL^2 controller gets it as its episode-start flag). ``send_action``
    applies (or transmits) an action ``[act_dim]`` float32. ``close`` releases the robot's
    resources. RL^2 policies also need the reward: see :class:`RewardRobot`.
    """

    new_episode: bool

    def read_observation(self) -> np.ndarray | None: ...

    def send_action(self, action: np.ndarray) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class RewardRobot(Robot, Protocol):
    """A :class:`Robot` that also reports rewards, as RL^2 policies need (MAML policies do not).

    After a read, ``last_reward`` is the reward of the step that led to that observation (the
    previous episode's last step when ``new_episode``; anything, e.g. 0, before the robot's first
    step: a trial's first step ignores it), or None when the robot could not say it for this
    observation (a UDP robot that sent a version-1 packet). ``SimulatedRobot`` and ``UdpRobot``
    are reward robots; a robot without the attribute still drives MAML policies.
    """

    last_reward: float | None


@dataclasses.dataclass(frozen=True)
class LoopStats:
    """What a control loop run did. Latencies in microseconds, over the ticks that acted."""

    steps: int
    """Ticks run."""
    actions: int
    """Actions computed by the controller and sent."""
    rate_hz: float | None
    """Tick rate (None: not paced, as fast as the robot allows)."""
    elapsed_s: float
    """Wall time of the run."""
    deadline_misses: int
    """Ticks whose work ended after the next tick's release time (paced runs only)."""
    skipped_ticks: int
    """Grid slots that passed entirely during overruns (not run; paced runs only)."""
    observations_missing: int
    """Ticks where the robot had no observation."""
    watchdog_trips: int
    """Times the robot's watchdog fired (safe action sent because observations stopped)."""
    nonfinite_observations: int
    """Observations that were not finite (the safe action was sent)."""
    nonfinite_actions: int
    """Network outputs that were not finite (replaced by the safe action)."""
    episodes: int
    """Episodes completed during the run: those the robot reports as ended (``robot.episode_returns``;
    the simulator does, as soon as the action that ends one is sent), else those followed by a new
    one (``robot.new_episode``; a UDP robot says an episode ended with the next one's first
    observation)."""
    episode_returns: tuple[float, ...]
    """Returns of the episodes completed during the run, when the robot reports them (then exactly
    ``episodes`` of them), else ``()``. An episode still in progress is not among them."""
    partial_episode_steps: int
    """Steps of the episode still in progress when the run stopped, when the robot reports it
    (``robot.episode_length``; the simulator does); 0 when the run's last action ended an episode."""
    partial_episode_return: float | None
    """Return so far of that unfinished episode (``robot.episode_return``); None when there is none
    (the run stopped at an episode's end) or the robot does not report it."""
    act_latency_p50_us: float
    act_latency_p99_us: float
    act_latency_max_us: float
    tick_latency_p99_us: float
    """p99 of read + act + send."""
    interrupted: bool = False
    """True when the run was stopped by Ctrl-C."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """A few human-readable lines."""
        rate = "unpaced" if self.rate_hz is None else f"{self.rate_hz:g} Hz"
        lines = [
            f"steps {self.steps} ({rate}, {self.elapsed_s:.2f} s), actions {self.actions}"
            + (" [interrupted]" if self.interrupted else ""),
            f"deadline misses {self.deadline_misses}, skipped ticks {self.skipped_ticks}",
            f"act latency p50 {self.act_latency_p50_us:.1f} us, p99 {self.act_latency_p99_us:.1f} us, "
            f"max {self.act_latency_max_us:.1f} us; tick p99 {self.tick_latency_p99_us:.1f} us",
            f"observations missing {self.observations_missing}, watchdog trips {self.watchdog_trips}, "
            f"non-finite observations {self.nonfinite_observations}, non-finite actions {self.nonfinite_actions}",
        ]
        episodes = f"episodes completed {self.episodes}"
        if self.episode_returns:
            returns = ", ".join(f"{r:.2f}" for r in self.episode_returns[:10])
            more = ", ..." if len(self.episode_returns) > 10 else ""
            episodes += f", returns [{returns}{more}] (mean {float(np.mean(self.episode_returns)):.2f})"
        if self.partial_episode_return is not None:
            episodes += (f"; unfinished episode: {self.partial_episode_steps} steps, "
                         f"return so far {self.partial_episode_return:.2f}")
        lines.append(episodes)
        return "\n".join(lines)


def run_control_loop(
    controller: Any,
    robot: Robot,
    *,
    rate_hz: float | None = None,
    steps: int | None = 1000,
    max_episodes: int | None = None,
    realtime: bool = True,
    spin_s: float = 0.0002,
    new_trial: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> LoopStats:
    """Run ``controller`` against ``robot`` at a fixed rate.

    Args:
        controller: a :class:`~bmaml_robot_deploy.Controller` (anything with ``act(obs)``,
            ``reset()``, ``control_dt``, ``nonfinite_count``, ``nonfinite_action_count``; with
            ``needs_reward`` True, an RL^2 controller: ``act(obs, reward=, episode_start=)``).
        robot: a :class:`Robot`; for an RL^2 controller a :class:`RewardRobot`.
        rate_hz: ticks per second; default ``1 / controller.control_dt`` (the file's rate).
        steps: ticks to run (None: until ``max_episodes`` or Ctrl-C).
        max_episodes: stop after this many episodes ended (None: no limit).
        realtime: pace ticks on the grid; False runs them back to back (as fast as the robot
            answers: simulation faster than real time, or lockstep with a UDP robot).
        spin_s: the last part of each wait is spent spinning instead of sleeping (precision).
        new_trial: RL^2: the run starts a new trial (``controller.reset()`` before the first
            tick); False continues the controller's trial (e.g. an earlier run's episodes).
            Ignored for MAML controllers.
        clock, sleep: time sources (for tests); ``clock`` in seconds, monotonic.

    Returns:
        :class:`LoopStats`. Ctrl-C ends the run early (``interrupted=True``).

    Raises:
        ValueError: an RL^2 controller with a robot that reports no rewards (no ``last_reward``:
            before the first tick), or an observation that came without one (``last_reward``
            None, e.g. a version-1 UDP packet: before acting on it).
    """
    steps = check_int(steps, "steps", minimum=0, allow_none=True)
    max_episodes = check_int(max_episodes, "max_episodes", minimum=1, allow_none=True)
    steps_limit = math.inf if steps is None else steps
    if rate_hz is None:
        rate_hz = 1.0 / float(controller.control_dt)
    rate_hz = check_float(rate_hz, "rate_hz", low=0, low_open=True)
    spin_s = check_seconds(spin_s, "spin_s")
    period = 1.0 / rate_hz
    rl2 = bool(getattr(controller, "needs_reward", False))
    if rl2 and not hasattr(robot, "last_reward"):
        raise ValueError(
            f"robot: this RL^2 policy needs the reward of every step, and this {type(robot).__name__} reports none "
            "(no last_reward attribute: see bmaml_robot_deploy.loop.RewardRobot)"
        )
    if rl2 and new_trial:
        controller.reset()
    nonfinite_before = int(controller.nonfinite_count)
    nonfinite_actions_before = int(getattr(controller, "nonfinite_action_count", 0))
    watchdog_before = int(getattr(robot, "watchdog_trips", 0))
    # A robot that reports its episodes' returns (the simulator) says an episode ended as soon as
    # the action ending it is sent; others only with the next episode's first observation.
    reports_returns = hasattr(robot, "episode_returns")
    extras: Any = robot  # its optional attributes beyond Robot (episode_returns, ...), probed with hasattr
    returns_before = len(extras.episode_returns) if reports_returns else 0

    def completed() -> int:
        return len(extras.episode_returns) - returns_before if reports_returns else episodes

    act_latencies: list[float] = []
    tick_latencies: list[float] = []
    step = actions = misses = skipped = missing = episodes = 0
    interrupted = False
    start = clock()
    release = start  # release time of the current tick
    try:
        while step < steps_limit and (max_episodes is None or completed() < max_episodes):
            if realtime:
                _wait_until(release, clock, sleep, spin_s)
            tick_start = clock()
            obs = robot.read_observation()
            if obs is None:
                missing += 1
            else:
                new_episode = bool(getattr(robot, "new_episode", False))
                if new_episode:
                    if not rl2:
                        controller.reset()  # RL^2 carries its state across episodes: the flag says it
                    if step > 0:
                        episodes += 1
                        if max_episodes is not None and episodes >= max_episodes:
                            break  # this observation starts an episode we will not run
                if rl2:
                    reward = extras.last_reward
                    if reward is None:
                        raise ValueError(
                            f"robot: this RL^2 policy needs the reward of every step, and the {type(robot).__name__} "
                            "gave an observation without one (a UDP robot sending version-1 observation packets? "
                            "the robot side must send version 2, which carries the reward)"
                        )
                    act_start = clock()
                    action = controller.act(obs, reward=float(reward), episode_start=new_episode)
                else:
                    act_start = clock()
                    action = controller.act(obs)
                act_latencies.append(clock() - act_start)
                robot.send_action(action)
                actions += 1
            tick_end = clock()
            tick_latencies.append(tick_end - tick_start)
            step += 1
            if realtime:
                release += period
                if tick_end > release:
                    misses += 1
                    passed = math.floor((tick_end - release) / period)  # slots entirely missed
                    skipped += passed
                    release += passed * period
    except KeyboardInterrupt:
        interrupted = True
    elapsed = clock() - start
    returns = tuple(float(r) for r in list(extras.episode_returns)[returns_before:]) if reports_returns else ()
    partial_steps = int(getattr(robot, "episode_length", 0)) if hasattr(robot, "episode_return") else 0
    partial_return = float(extras.episode_return) if partial_steps > 0 else None
    return LoopStats(
        steps=step,
        actions=actions,
        rate_hz=float(rate_hz) if realtime else None,
        elapsed_s=elapsed,
        deadline_misses=misses,
        skipped_ticks=skipped,
        observations_missing=missing,
        watchdog_trips=int(getattr(robot, "watchdog_trips", 0)) - watchdog_before,
        nonfinite_observations=int(controller.nonfinite_count) - nonfinite_before,
        nonfinite_actions=int(getattr(controller, "nonfinite_action_count", 0)) - nonfinite_actions_before,
        episodes=len(returns) if reports_returns else episodes,
        episode_returns=returns,
        partial_episode_steps=partial_steps,
        partial_episode_return=partial_return,
        act_latency_p50_us=_percentile_us(act_latencies, 50),
        act_latency_p99_us=_percentile_us(act_latencies, 99),
        act_latency_max_us=_percentile_us(act_latencies, 100),
        tick_latency_p99_us=_percentile_us(tick_latencies, 99),
        interrupted=interrupted,
    )


def _wait_until(deadline: float, clock: Callable[[], float], sleep: Callable[[float], None], spin_s: float) -> None:
    """Sleep until ``spin_s`` before ``deadline``, then spin until it."""
    remaining = deadline - clock()
    if remaining > spin_s:
        sleep(remaining - spin_s)
    if spin_s > 0:
        while clock() < deadline:
            pass


def _percentile_us(seconds: list[float], q: float) -> float:
    if not seconds:
        return float("nan")
    return float(np.percentile(np.asarray(seconds), q)) * 1e6
