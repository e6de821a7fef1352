"""Videos of a run's policy on one task, before and after adaptation (headless).

    bmaml-render runs/hc-gru --task '{"direction": -1}' --out backwards.mp4 --adapt-steps 1
    from bmaml_robot.render import render
    render("runs/hc-gru", {"direction": -1.0}, "backwards.gif", layout="sequential")

What it does:

1. Loads the run's meta-policy (``policy.pt`` or the latest ``checkpoint.pt``, as ``bmaml-eval``).
2. Adapts to the task exactly as training does: ``adapt_steps`` times, sample ``episodes``
   episodes with the parameters adapted so far (``MetaSampler``) and adapt
   (``meta.adapt_to_tasks``), with the run's ``fast_lr`` unless given.
3. Runs one episode with the meta-policy ("before") and one with the adapted policy ("after") side
   by side in a 2-env batched robot, from the same initial state, and records every env's MuJoCo
   state (``get_state()``: qpos, qvel) before each step. Actions are the policy's mean (the
   deterministic policy) by default, or samples with ``stochastic=True`` (``--stochastic``).
   An RL^2 run (it adapts in its activations, not by gradient steps) is shown in episode 1 and in
   episode ``adapt_steps + 1`` of one trial (``record_trial``): ``rl2.sampler.TrialSampler``'s
   trial on the task, on ``bmaml-eval``'s episode stream of the seed, with the mean actions unless
   ``stochastic``.
4. Draws the frames: MuJoCo robots are mirrored into a Python ``mujoco.MjData`` of the same MJCF
   model (``envs.assets.load_model``), ``mj_forward``, and rendered offscreen from the model's
   ``track`` camera (it follows the robot). Navigation2D has no MJCF model: its frames are
   matplotlib drawings of the square of goals, the goal (star), the path so far and the robot
   (dot). Each panel is labelled with the phase and the return so far.
5. Writes an MP4 (libx264 through imageio-ffmpeg) or a GIF (pillow), chosen by the file suffix,
   atomically: panels side by side (``side-by-side``) or the "before" episode then the "after"
   one (``sequential``).

Headless OpenGL: the backend (EGL or OSMesa, ``MUJOCO_GL`` to pick one) and the offscreen renderer
live in ``bmaml_robot.envs.rendering``, shared with the single envs' ``render()``; when no backend
works, ``GLUnavailableError`` says what failed and which packages to install.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bmaml_robot.checkpoint import atomic_path
from bmaml_robot.envs.assets import load_model
from bmaml_robot.envs.families import TaskFamily, get_family
from bmaml_robot.envs.physics import describe, show_task
from bmaml_robot.envs.rendering import (  # noqa: F401 (re-exported: bmaml_robot.render's API)
    APT_PACKAGES,
    GL_BACKENDS,
    GLUnavailableError,
    OffscreenRenderer,
    choose_gl_backend,
    gl_unavailable_message,
    probe_gl_backend,
)
from bmaml_robot.envs.vector_env import BatchedRobotEnv
from bmaml_robot.factory import build_learner
from bmaml_robot.meta import MetaLearner, adapt_to_tasks
from bmaml_robot.meta.sampler import MetaSampler
from bmaml_robot.rl2.policy import RL2Policy
from bmaml_robot.rl2.sampler import TrialSampler
from bmaml_robot.run import LoadedRun, load_run
from bmaml_robot.seeds import MAX_SEED, evaluation_seed
from bmaml_robot.torch_threads import one_torch_thread
from bmaml_robot_deploy.checks import check_choice, check_float, check_int, describe_range

LAYOUTS = ("side-by-side", "sequential")
VIDEO_SUFFIXES = (".mp4", ".gif")
_MAX_SIZE = 4096


@functools.cache
def gl_backend() -> str:
    """The headless OpenGL backend to render with (``envs.rendering.choose_gl_backend``, probing
    with this module's ``probe_gl_backend``); GLUnavailableError if none."""
    return choose_gl_backend(probe_gl_backend)


# ----------------------------------------------------------------------------- episodes
@dataclasses.dataclass
class Recording:
    """The "before" and "after" episodes, recorded state by state."""

    qpos: np.ndarray
    """float64 [T, 2, nq]: state before each step (index 1: 0 before, 1 after adaptation)."""
    qvel: np.ndarray
    """float64 [T, 2, nv]."""
    rewards: np.ndarray
    """float64 [T, 2]: reward of each step (0 after the episode ended)."""
    lengths: np.ndarray
    """int [2]: steps of each episode."""
    final_qpos: np.ndarray
    """float64 [2, nq]: qpos after the last step (from the final observation where it holds qpos:
    Navigation2D's position; else the last recorded state)."""


def record_episodes(
    policy: Any, family: str, task: Mapping[str, Any], params_after: Mapping[str, torch.Tensor], horizon: int,
    seed: int, stochastic: bool = False, action_scale: float | None = None,
) -> Recording:
    """One episode of the meta-policy and one of the adapted policy (``params_after``,
    ``{name: [1, ...]}``), in lockstep from the same initial state. ``action_scale``: the run's
    (None: the family's default); the robots receive the policy's actions mapped by it."""
    env = BatchedRobotEnv(family, 2, max_episode_steps=horizon)
    try:
        action_map = env.action_map(action_scale)
        env.set_tasks([dict(task), dict(task)])
        env.reset(seed=seed)
        qpos, qvel = env.get_state()
        obs = env.set_state(np.repeat(qpos[:1], 2, axis=0), np.repeat(qvel[:1], 2, axis=0))
        meta = {name: value.detach() for name, value in policy.batched_params(1).items()}
        params = {name: torch.cat([meta[name], params_after[name].detach()]) for name in meta}
        state = policy.initial_state((2, 1))
        generator = torch.Generator().manual_seed(seed)
        alive = np.ones(2, dtype=bool)
        lengths = np.zeros(2, dtype=int)
        qpos_list, qvel_list, rewards = [], [], []
        final = np.array(qpos)  # [2, nq], set when each episode ends (at the latest at the horizon)
        navigation = family == "Navigation2D"  # its observation is the position, its qpos
        with torch.no_grad():
            for _ in range(horizon):
                qpos, qvel = env.get_state()
                qpos_list.append(qpos.copy())
                qvel_list.append(qvel.copy())
                observation = torch.from_numpy(obs).to(torch.float32).view(2, 1, -1)
                mean, log_std, state = policy.step(observation, state, params)
                action = mean
                if stochastic:
                    action = mean + log_std.exp().expand_as(mean) * torch.randn(mean.shape, generator=generator)
                obs, reward, terminated, truncated, info = env.step(action_map.to_robot(action.view(2, -1).numpy()))
                rewards.append(np.where(alive, reward, 0.0))
                lengths += alive
                ended = alive & (terminated | truncated)
                for i in np.flatnonzero(ended):
                    final[i] = info["final_obs"][i][: final.shape[1]] if navigation else qpos_list[-1][i]
                alive &= ~(terminated | truncated)
                if not alive.any():
                    break
        return Recording(np.stack(qpos_list), np.stack(qvel_list), np.stack(rewards), lengths, final)
    finally:
        env.close()


def record_trial(
    policy: RL2Policy, family: str, task: Mapping[str, Any], horizon: int, episode: int, episodes_per_trial: int,
    seed: int, stochastic: bool = False, action_scale: float | None = None,
) -> Recording:
    """Episode 1 ("before") and episode ``episode`` ("after", counted from 1) of one RL^2 trial of
    ``max(episode, episodes_per_trial)`` episodes on ``task``: the trial ``rl2.sampler.TrialSampler``
    samples for ``seed`` (the same stepping, streams and draws), with the mean actions unless
    ``stochastic``."""
    sampler = TrialSampler(family, 1, max(episode, episodes_per_trial), horizon, action_scale=action_scale)
    states: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    def keep(t: int, qpos: np.ndarray, qvel: np.ndarray, info: dict[str, Any]) -> None:
        ended = bool(info["_final_obs"][0])
        states.append((qpos[0].copy(), qvel[0].copy(), info["final_obs"][0].copy() if ended else None))

    try:
        sampler.set_tasks([dict(task)])
        trials = sampler.sample(policy, seed, mean_actions=not stochastic, on_step=keep)
    finally:
        sampler.close()
    episode_of = trials.episode[:, 0].numpy()
    kept = (0, episode - 1)
    steps = [np.flatnonzero(episode_of[: len(states)] == e) for e in kept]
    lengths = np.array([len(s) for s in steps])
    T = int(lengths.max())
    at = [[steps[e][min(t, len(steps[e]) - 1)] for e in range(2)] for t in range(T)]  # the step shown
    qpos = np.stack([np.stack([states[i][0] for i in row]) for row in at])
    qvel = np.stack([np.stack([states[i][1] for i in row]) for row in at])
    rewards = np.array([[float(trials.rewards[i, 0]) if t < lengths[e] else 0.0 for e, i in enumerate(row)]
                        for t, row in enumerate(at)])
    last = [states[s[-1]] for s in steps]
    # Navigation2D's observation is its position (its qpos); a MuJoCo robot shows its last state.
    final = np.stack([f[: q.shape[0]] if family == "Navigation2D" and f is not None else q for q, _, f in last])
    return Recording(qpos, qvel, rewards, lengths, final)


def adapt_to_task(run: LoadedRun, task: Mapping[str, Any], adapt_steps: int, episodes: int, fast_lr: float | None,
                  seed: int, num_threads: int = 1) -> Mapping[str, torch.Tensor]:
    """Parameters ``{name: [1, ...]}`` after ``adapt_steps`` inner steps on ``task`` (as training,
    on the evaluation streams of ``seed``)."""
    config = run.config
    sampler = MetaSampler(config.family, 1, episodes, config.horizon, num_threads=num_threads,
                          action_scale=config.action_scale)
    try:
        sampler.set_tasks([dict(task)])
        policy = run.maml_policy("bmaml-render")
        learner = build_learner(config.replace(fast_lr=config.fast_lr if fast_lr is None else fast_lr,
                                               num_threads=1), policy)
        assert isinstance(learner, MetaLearner)  # a run's Policy (not RL^2's) gets MAML's learner
        loop = adapt_to_tasks(learner, sampler, adapt_steps, lambda step: evaluation_seed(seed, 1 + step),
                              sample_adapted=False)
    finally:
        sampler.close()
    if loop.params is None:
        return {name: value.detach() for name, value in policy.batched_params(1).items()}
    return loop.params


# ----------------------------------------------------------------------------- frames
def _label(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """``image`` with ``lines`` of text in its top-left corner (white on a dark box)."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    size = max(9, image.shape[0] // 22)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    y: float = 3  # Pillow's boxes may be floats
    for line in lines:
        box = draw.textbbox((4, y), line, font=font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(20, 20, 20))
        draw.text((4, y), line, fill=(255, 255, 255), font=font)
        y = box[3] + 3
    return np.asarray(picture)


def mujoco_frames(family: TaskFamily, task: Mapping[str, Any], recording: Recording, width: int,
                  height: int) -> np.ndarray:
    """uint8 [T, 2, height, width, 3]: both episodes, frame by frame (an ended episode holds its
    last frame), with the task's physics (a disabled motor's body red)."""
    model = load_model(family.robot)
    if family.layout is not None:
        show_task(model, family.layout, task, model.geom_rgba.copy())
    steps = recording.qpos.shape[0]
    frames = np.zeros((steps, 2, height, width, 3), dtype=np.uint8)
    with OffscreenRenderer(model, width, height, backend=gl_backend()) as renderer:
        for episode in range(2):
            last = None
            for t in range(steps):
                if t < recording.lengths[episode]:
                    last = renderer.render(recording.qpos[t, episode], recording.qvel[t, episode])
                assert last is not None  # every recorded episode has its first step
                frames[t, episode] = last
    return frames


def navigation_frames(task: Mapping[str, Any], recording: Recording, width: int, height: int) -> np.ndarray:
    """uint8 [T, 2, height, width, 3] drawn with matplotlib: the goal square, goal, path, robot."""
    from bmaml_robot.plots import figure_rgb, new_figure

    dpi = 100
    figure = new_figure(width / dpi, height / dpi, dpi=dpi)
    axes = figure.add_axes((0.02, 0.02, 0.96, 0.96))
    goal = np.asarray(task["goal"], dtype=float)
    paths = [np.vstack([recording.qpos[: recording.lengths[e], e], recording.final_qpos[e][None]]) for e in range(2)]
    points = np.vstack([*paths, goal[None], [[-0.5, -0.5], [0.5, 0.5]]])
    low, high = points.min(axis=0), points.max(axis=0)
    centre, half = (low + high) / 2, max(float((high - low).max()) / 2 * 1.1, 0.55)
    aspect = width / height
    steps = recording.qpos.shape[0]
    frames = np.zeros((steps, 2, height, width, 3), dtype=np.uint8)
    for episode in range(2):
        axes.clear()
        axes.set_xlim(centre[0] - half * aspect, centre[0] + half * aspect)
        axes.set_ylim(centre[1] - half, centre[1] + half)
        axes.set_aspect("equal")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.add_patch(_square())
        axes.plot(*goal, marker="*", markersize=max(8, height // 20), color="#d62728", linestyle="none")
        (line,) = axes.plot([], [], color="#1f77b4", linewidth=1.5)
        (dot,) = axes.plot([], [], "o", color="#1f77b4", markersize=max(4, height // 40))
        path = paths[episode]
        for t in range(steps):
            shown = path[: min(t, len(path) - 1) + 1]
            line.set_data(shown[:, 0], shown[:, 1])
            dot.set_data(shown[-1:, 0], shown[-1:, 1])
            frames[t, episode] = figure_rgb(figure)[:height, :width]
    return frames


def _square() -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((-0.5, -0.5), 1.0, 1.0, fill=False, linestyle="--", edgecolor="0.6")


def panel_titles(adapt_steps: int, rl2: bool = False) -> tuple[str, str]:
    """The "before" and "after" panels' titles: MAML's gradient steps, or RL^2's episodes of a trial."""
    if rl2:
        return "episode 1 of the trial", f"episode {adapt_steps + 1} of the trial"
    return "before adaptation", f"after {adapt_steps} adaptation step{'s' if adapt_steps != 1 else ''}"


def compose(frames: np.ndarray, recording: Recording, layout: str, titles: tuple[str, str],
            task_line: str = "") -> np.ndarray:
    """Label the panels (``titles``: ``panel_titles``; ``task_line``: what the task changed in the
    robot, if anything) and lay them out: uint8 [frames, height, width(, x2), 3]."""
    steps = frames.shape[0]
    cumulative = np.cumsum(recording.rewards, axis=0)
    labelled = np.empty_like(frames)
    for t in range(steps):
        for episode in range(2):
            t_shown = min(t, recording.lengths[episode] - 1)
            lines = [titles[episode], f"step {t_shown + 1}/{steps}  return {cumulative[t_shown, episode]:.1f}"]
            labelled[t, episode] = _label(frames[t, episode], lines + ([task_line] if task_line else []))
    if layout == "side-by-side":
        separator = np.full((steps, frames.shape[2], 2, 3), 255, dtype=np.uint8)
        return np.concatenate([labelled[:, 0], separator, labelled[:, 1]], axis=2)
    return np.concatenate([labelled[: recording.lengths[0], 0], labelled[: recording.lengths[1], 1]], axis=0)


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write uint8 [N, H, W, 3] frames as MP4 or GIF (by suffix), atomically."""
    import imageio.v3 as iio

    suffix = path.suffix.lower()
    with atomic_path(path, suffix) as tmp:  # a kill mid-encoding never leaves half a video
        if suffix == ".gif":
            iio.imwrite(tmp, frames, extension=".gif", duration=int(round(1000.0 / fps)), loop=0)
        else:
            iio.imwrite(tmp, frames, extension=".mp4", plugin="FFMPEG", fps=fps, codec="libx264",
                        macro_block_size=2, ffmpeg_log_level="error")


# ----------------------------------------------------------------------------- render
@dataclasses.dataclass
class RenderResult:
    path: Path
    num_frames: int
    frame_shape: tuple[int, int]
    """(height, width) of a video frame."""
    returns: tuple[float, float]
    """Return of the "before" and the "after" episode."""
    lengths: tuple[int, int]
    gl_backend: str | None
    """The OpenGL backend used (None for Navigation2D, drawn with matplotlib)."""


def parse_task(family: str, task: str | Mapping[str, Any]) -> dict[str, Any]:
    """A task dict from JSON text or a mapping, checked against the family (ValueError/TypeError)."""
    if isinstance(task, str):
        try:
            task = json.loads(task)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"task: expected a JSON object such as {_example(family)}, got {task!r} ({error})"
            ) from error
    if not isinstance(task, Mapping):
        raise ValueError(f"task: expected a JSON object such as {_example(family)}, got {task!r}")
    get_family(family).encode(task, "task")
    return dict(task)


def _example(family: str) -> str:
    return json.dumps(get_family(family).sample_tasks(1, np.random.default_rng(0))[0])


def check_render_settings(
    out: Path,
    adapt_steps: int,
    layout: str,
    width: int,
    height: int,
    seed: int,
    episodes: int,
    fast_lr: float | None,
    fps: float | None,
) -> None:
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"out: expected a file name ending in {' or '.join(VIDEO_SUFFIXES)}, got {str(out)!r}")
    if out.exists() and out.is_dir():
        raise ValueError(f"out: expected a file name, got the directory {out}")
    check_choice(layout, "layout", LAYOUTS)
    check_int(adapt_steps, "adapt_steps", minimum=0)
    check_int(episodes, "episodes", minimum=1)
    what, note = "an even integer", " (video encoders need even sizes)"
    for name, value in (("width", width), ("height", height)):
        if check_int(value, name, minimum=16, maximum=_MAX_SIZE, what=what, note=note) % 2:
            raise ValueError(f"{name}: expected {what}{describe_range(16, _MAX_SIZE)}{note}, got {value!r}")
    check_int(seed, "seed", minimum=0, below=MAX_SEED)
    check_float(fast_lr, "fast_lr", low=0, allow_none=True)
    check_float(fps, "fps", low=0, high=240, low_open=True, allow_none=True, what="a number")


def check_rl2_render(run: LoadedRun, adapt_steps: int, fast_lr: float | None) -> None:
    """What an RL^2 run needs of the settings: ``adapt_steps`` >= 1 episodes before the "after"
    episode, no inner step size; discrete tasks have nothing to render."""
    if not isinstance(run.policy, RL2Policy):
        return
    if run.policy.discrete:
        raise ValueError(f"run: {run.run_dir} is an RL^2 run on {run.config.family}, a discrete task: "
                         "there is no robot to render")
    if adapt_steps < 1:
        raise ValueError("adapt_steps: an RL^2 run's 'after' episode is episode adapt_steps + 1 of its trial "
                         f"(it adapts in its activations, across episodes): expected >= 1, got {adapt_steps}")
    if fast_lr is not None:
        raise ValueError(f"fast_lr: an RL^2 run adapts in its activations, with no inner step: expected None, "
                         f"got {fast_lr!r}")


def render(
    run_dir: str | Path | LoadedRun,
    task: str | Mapping[str, Any],
    out: str | Path,
    *,
    adapt_steps: int = 1,
    layout: str = "side-by-side",
    width: int = 480,
    height: int = 360,
    seed: int = 0,
    episodes: int = 10,
    fast_lr: float | None = None,
    stochastic: bool = False,
    fps: float | None = None,
    num_threads: int = 1,
) -> RenderResult:
    """Render the run's policy on ``task`` before and after ``adapt_steps`` adaptation steps
    (module docstring) into ``out`` (.mp4 or .gif). ``episodes``: episodes sampled per adaptation
    step; ``fps``: default real time (1 / the env's control step; 10 for Navigation2D).

    An RL^2 run (it adapts in its activations) is shown in episode 1 and in episode
    ``adapt_steps + 1`` of one trial (``record_trial``); ``episodes`` does not apply."""
    out = Path(out)
    check_render_settings(out, adapt_steps, layout, width, height, seed, episodes, fast_lr, fps)
    run = load_run(run_dir)
    check_rl2_render(run, adapt_steps, fast_lr)  # before any work
    rl2 = isinstance(run.policy, RL2Policy)
    family = get_family(run.config.family)
    task = parse_task(family.name, task)
    if family.robot != "Navigation2D":
        backend: str | None = gl_backend()  # fail before any work when there is no OpenGL
    else:
        backend = None
    with one_torch_thread():
        if isinstance(run.policy, RL2Policy):  # trials on bmaml-eval's stream of episodes
            recording = record_trial(run.policy, family.name, task, run.config.horizon, adapt_steps + 1,
                                     run.config.episodes_per_trial, evaluation_seed(seed, 1), stochastic,
                                     run.config.action_scale)
        else:
            params = adapt_to_task(run, task, adapt_steps, episodes, fast_lr, seed, num_threads)
            recording = record_episodes(run.policy, family.name, task, params, run.config.horizon,
                                        evaluation_seed(seed, 0), stochastic, run.config.action_scale)
    if family.robot == "Navigation2D":
        frames = navigation_frames(task, recording, width, height)
        default_fps = 10.0
    else:
        frames = mujoco_frames(family, task, recording, width, height)
        default_fps = 1.0 / _control_dt(family.name)
    video = compose(frames, recording, layout, panel_titles(adapt_steps, rl2),
                    describe(family.layout, task) if family.layout else "")
    write_video(out, video, fps or default_fps)
    returns = recording.rewards.sum(axis=0)
    return RenderResult(
        out,
        int(video.shape[0]),
        (int(video.shape[1]), int(video.shape[2])),
        (float(returns[0]), float(returns[1])),
        (int(recording.lengths[0]), int(recording.lengths[1])),
        backend,
    )


def _control_dt(family: str) -> float:
    env = BatchedRobotEnv(family, 1, max_episode_steps=1)
    try:
        return float(env.dt)
    finally:
        env.close()


# ----------------------------------------------------------------------------- CLI
def command(args: Any, parser: Any) -> int:
    """``bmaml-render`` after its arguments were parsed (``bmaml_robot.cli.render_main``): check the
    settings, the run, the task and OpenGL (usage errors), then render."""
    try:
        check_render_settings(
            args.out,
            args.adapt_steps,
            args.layout,
            args.width,
            args.height,
            args.seed,
            args.episodes,
            args.fast_lr,
            args.fps,
        )
        run = load_run(args.run_dir)
        check_rl2_render(run, args.adapt_steps, args.fast_lr)  # a usage error before any work
        family = get_family(run.config.family)
        task = parse_task(family.name, args.task)
        if family.robot != "Navigation2D":
            gl_backend()
    except (ValueError, TypeError, GLUnavailableError) as error:
        parser.error(str(error))
    if isinstance(run.policy, RL2Policy) and args.adapt_steps + 1 > run.config.episodes_per_trial:
        print(f"bmaml-render: warning: episode {args.adapt_steps + 1} is past the trials of "
              f"{run.config.episodes_per_trial} episodes the run was trained on", file=sys.stderr)
    if not family.in_distribution(task):
        print(
            f"bmaml-render: warning: task {json.dumps(task)} is outside {family.name}'s training distribution "
            f"({family.task_distribution})",
            file=sys.stderr,
        )
    result = render(
        run,
        task,
        args.out,
        adapt_steps=args.adapt_steps,
        layout=args.layout,
        width=args.width,
        height=args.height,
        seed=args.seed,
        episodes=args.episodes,
        fast_lr=args.fast_lr,
        stochastic=args.stochastic,
        fps=args.fps,
        num_threads=args.num_threads,
    )
    before, after = panel_titles(args.adapt_steps, isinstance(run.policy, RL2Policy))
    print(
        f"wrote {result.path}: {result.num_frames} frames of {result.frame_shape[1]}x{result.frame_shape[0]}"
        f"{f' (OpenGL: {result.gl_backend})' if result.gl_backend else ''}; return {before} "
        f"{result.returns[0]:.2f}, {after} {result.returns[1]:.2f}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``bmaml-render`` (``bmaml_robot.cli.render_main``: arguments are checked before torch is imported)."""
    from bmaml_robot.cli import render_main

    return render_main(argv)


if __name__ == "__main__":
    sys.exit(main())
