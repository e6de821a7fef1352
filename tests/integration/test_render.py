"""bmaml-render: headless videos before and after adaptation.

Tiny runs (one meta-iteration, horizon 8) and tiny frames keep the file fast. The MuJoCo tests
skip, with the message that says what to install, only when no headless OpenGL backend (EGL or
OSMesa) works on the machine; Navigation2D is drawn with matplotlib and always runs.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import bmaml_robot.render as render_module
from bmaml_robot.config import TrainConfig
from bmaml_robot.render import GLUnavailableError, gl_backend, main, record_episodes, record_trial, render
from bmaml_robot.rl2.sampler import TrialSampler
from bmaml_robot.run import load_run
from bmaml_robot.train import train

HORIZON = 8
WIDTH, HEIGHT = 64, 48


def tiny_run(path: Path, family: str) -> Path:
    threads = torch.get_num_threads()
    train(TrainConfig(family=family, num_tasks=2, episodes_per_task=2, horizon=HORIZON, num_iterations=1, num_threads=1,
                      hidden_sizes=(8, 8), seed=0), path)
    torch.set_num_threads(threads)
    return path


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("render") / "cheetah", "HalfCheetahDir")


@pytest.fixture(scope="module")
def navigation_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("render") / "nav", "Navigation2D")


@pytest.fixture(scope="module")
def rl2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RL^2 run on Navigation2D (drawn without OpenGL): trials of 3 episodes."""
    threads = torch.get_num_threads()
    path = tmp_path_factory.mktemp("render") / "rl2"
    train(TrainConfig(algorithm="rl2", family="Navigation2D", policy="gru", recurrence="all", hidden_size=8,
                      num_tasks=2, episodes_per_trial=3, horizon=HORIZON, num_iterations=1, num_threads=1,
                      ppo_epochs=1, ppo_minibatches=1, seed=0), path)
    torch.set_num_threads(threads)
    return path


@pytest.fixture
def opengl() -> str:
    try:
        return gl_backend()
    except GLUnavailableError as error:
        pytest.skip(f"no headless OpenGL: {error}")


def read_frames(path: Path) -> np.ndarray:
    plugin = "FFMPEG" if path.suffix == ".mp4" else None
    return iio.imread(path, index=None, plugin=plugin)[..., :3]


def assert_not_blank(image: np.ndarray) -> None:
    assert image.std() > 5.0
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10


def test_side_by_side_gif_of_the_cheetah(cheetah_run: Path, tmp_path: Path, opengl: str) -> None:
    out = tmp_path / "cheetah.gif"
    result = render(cheetah_run, '{"direction": -1}', out, width=WIDTH, height=HEIGHT)
    assert result.gl_backend == opengl and result.lengths == (HORIZON, HORIZON)
    frames = read_frames(out)
    # One frame per step; the panels side by side with a 2-pixel separator.
    assert frames.shape == (HORIZON, HEIGHT, 2 * WIDTH + 2, 3)
    assert result.num_frames == HORIZON and result.frame_shape == (HEIGHT, 2 * WIDTH + 2)
    for panel in (frames[:, :, :WIDTH], frames[:, :, WIDTH + 2:]):
        assert_not_blank(panel[-1])
        # The robot moves: the panel changes during the episode (beyond the label's box).
        assert np.abs(panel[0, HEIGHT // 2:].astype(int) - panel[-1, HEIGHT // 2:].astype(int)).max() > 30
    assert list(out.parent.iterdir()) == [out]  # written atomically, no temporary left


def test_sequential_mp4(cheetah_run: Path, tmp_path: Path, opengl: str) -> None:
    out = tmp_path / "cheetah.mp4"
    result = render(cheetah_run, {"direction": 1.0}, out, layout="sequential", adapt_steps=2, width=WIDTH,
                    height=HEIGHT, episodes=2)
    frames = read_frames(out)
    assert frames.shape == (2 * HORIZON, HEIGHT, WIDTH, 3)
    assert result.num_frames == 2 * HORIZON
    assert_not_blank(frames[0]) and assert_not_blank(frames[-1])


def test_before_and_after_start_alike_and_match_without_adaptation(cheetah_run: Path) -> None:
    """Both episodes start from one state; with no adaptation (and the mean action) they are the
    same episode, step for step."""
    run = load_run(cheetah_run)
    params = {name: value.detach() for name, value in run.policy.batched_params(1).items()}
    recording = record_episodes(run.policy, "HalfCheetahDir", {"direction": 1.0}, params, HORIZON, seed=3)
    assert recording.qpos.shape == (HORIZON, 2, 9) and recording.qvel.shape == (HORIZON, 2, 9)
    assert np.array_equal(recording.qpos[:, 0], recording.qpos[:, 1])
    assert np.array_equal(recording.rewards[:, 0], recording.rewards[:, 1])
    assert not np.array_equal(recording.qpos[0, 0], recording.qpos[-1, 0])
    # Sampled actions differ between the two envs.
    noisy = record_episodes(run.policy, "HalfCheetahDir", {"direction": 1.0}, params, HORIZON, seed=3,
                            stochastic=True)
    assert np.array_equal(noisy.qpos[0, 0], noisy.qpos[0, 1])
    assert not np.array_equal(noisy.qpos[-1, 0], noisy.qpos[-1, 1])


def test_navigation_is_drawn_without_opengl(navigation_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "nav.gif"
    result = render(navigation_run, '{"goal": [0.3, -0.2]}', out, width=WIDTH * 2, height=HEIGHT * 2)
    assert result.gl_backend is None
    frames = read_frames(out)
    assert frames.shape == (max(result.lengths), HEIGHT * 2, WIDTH * 4 + 2, 3)
    assert_not_blank(frames[-1])
    # The goal star is drawn in red in both panels.
    red = (frames[-1, ..., 0] > 180) & (frames[-1, ..., 1] < 90) & (frames[-1, ..., 2] < 90)
    assert red[:, : WIDTH * 2].any() and red[:, WIDTH * 2 + 2:].any()


def test_no_opengl_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    gl_backend.cache_clear()
    monkeypatch.setattr(render_module, "probe_gl_backend", lambda backend: f"lib{backend}.so: cannot open shared object")
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    try:
        with pytest.raises(GLUnavailableError) as error:
            gl_backend()
        message = str(error.value)
        assert "egl: libegl.so: cannot open" in message and "osmesa: libosmesa.so" in message
        assert "apt-get install libegl1" in message and "apt-get install libosmesa6" in message
        monkeypatch.setenv("MUJOCO_GL", "glfw")
        gl_backend.cache_clear()
        with pytest.raises(GLUnavailableError, match="MUJOCO_GL: expected one of \\['egl', 'osmesa'\\]"):
            gl_backend()
        # MUJOCO_GL=osmesa: only that backend is tried.
        tried = []
        monkeypatch.setattr(render_module, "probe_gl_backend", lambda backend: tried.append(backend) or None)
        monkeypatch.setenv("MUJOCO_GL", "osmesa")
        gl_backend.cache_clear()
        assert gl_backend() == "osmesa" and tried == ["osmesa"]
    finally:
        gl_backend.cache_clear()


@pytest.mark.parametrize("args, message", [
    (["--task", '{"direction": -1}', "--out", "{tmp}/x.avi"], "out: expected a file name ending in .mp4 or .gif"),
    (["--task", "{direction: -1}", "--out", "{tmp}/x.gif"], "task: expected a JSON object"),
    (["--task", '{"velocity": 1.0}', "--out", "{tmp}/x.gif"], "task: HalfCheetahDir tasks have exactly the keys"),
    (["--task", '{"direction": -1}', "--out", "{tmp}/x.gif", "--width", "65"], "width: expected an even integer"),
    (["--task", '{"direction": -1}', "--out", "{tmp}/x.gif", "--adapt-steps", "-1"], "--adapt-steps: expected an integer >= 0"),
])
def test_cli_errors_are_usage_errors(cheetah_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(cheetah_run), *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_video(navigation_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nav.gif"
    assert main([str(navigation_run), "--task", '{"goal": [-0.2, 0.4]}', "--out", str(out), "--width", "96",
                 "--height", "64", "--layout", "sequential", "--adapt-steps", "0"]) == 0
    assert "wrote" in capsys.readouterr().out
    frames = read_frames(out)
    assert frames.shape[1:] == (64, 96, 3) and frames.shape[0] >= 2


def test_a_task_outside_the_distribution_is_rendered_with_a_warning(navigation_run: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "far.gif"
    assert main([str(navigation_run), "--task", '{"goal": [0.9, 0.0]}', "--out", str(out), "--width", "64",
                 "--height", "64", "--adapt-steps", "0", "--episodes", "1"]) == 0
    assert "outside Navigation2D's training distribution (goal ~ U[-0.5, 0.5]^2)" in capsys.readouterr().err
    assert out.is_file()


def test_a_disabled_motor_is_drawn_red(opengl: str, tmp_path: Path) -> None:
    """HalfCheetahCrippled: the body of the dead motor is red in the single env's frames and in a
    rendered video."""
    import gymnasium

    def red_pixels(frame: np.ndarray) -> int:
        r, g, b = (frame[..., k].astype(int) for k in range(3))
        return int(np.sum((r > 90) & (r > 2 * g) & (r > 2 * b)))  # lit red, shaded or not

    frames = {}
    for name, task in {"crippled": {"actuator_gear": {"fshin": 0.0}}, "healthy": {}}.items():
        env = gymnasium.make("bmaml_robot/HalfCheetahCrippled-v0", task=task, render_mode="rgb_array", width=160,
                             height=120)
        env.reset(seed=0)
        frames[name] = env.render()
        env.close()
    assert red_pixels(frames["crippled"]) > 30 and red_pixels(frames["healthy"]) == 0
    run = tiny_run(tmp_path / "run", "HalfCheetahCrippled")
    result = render(run, {"actuator_gear": {"bfoot": 0.0}}, tmp_path / "v.gif", adapt_steps=1, width=160, height=120,
                    episodes=1)
    video = read_frames(result.path)
    assert red_pixels(video[len(video) // 2]) > 30


def test_asset_loads_are_quiet(tmp_path: Path) -> None:
    """Gymnasium's HalfCheetah asset raises a deprecation warning when compiled (``settotalmass``;
    MuJoCo reports it when the asset is compiled again in the process, as a video does after the
    env made its core: hence fresh processes): frames and videos load it through ``load_model``,
    which keeps it off the terminal, as the core does."""
    import os
    import subprocess
    import sys

    import bmaml_robot

    # The package this test imported (installed, or the checkout), whatever the working directory.
    env = {**os.environ, "PYTHONPATH": str(Path(bmaml_robot.__file__).parent.parent)}

    def stderr_of(load: str) -> str:
        code = f"import bmaml_robot as bm, bmaml_robot.envs.assets as a, mujoco; bm.make_vec('HalfCheetahDir', 1); {load}"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "settotalmass" in stderr_of("mujoco.MjModel.from_xml_path(a.asset_path('HalfCheetah'))")  # before
    assert "settotalmass" not in stderr_of("a.load_model('HalfCheetah'); a.load_model('Ant')")


def test_an_rl2_video_shows_the_trial_the_sampler_samples(rl2_run: Path) -> None:
    """record_trial is TrialSampler's trial for the same seed (one stepping routine: its streams
    and draws, whichever episode is shown): the first and the shown episode's returns are the
    sampler's, step by step and bit for bit; with the mean actions it is another trial from the
    same resets."""
    run = load_run(rl2_run)
    task = {"goal": [0.3, -0.2]}
    sampler = TrialSampler("Navigation2D", 1, 3, HORIZON, action_scale=run.config.action_scale)
    sampler.set_tasks([task])
    trials = sampler.sample(run.policy, 5)
    sampler.close()
    rewards = [trials.rewards[trials.episode[:, 0] == e, 0].numpy() for e in range(3)]  # [HORIZON] each
    for episode in (2, 3):  # a trial of the run's 3 episodes either way
        recording = record_trial(run.policy, "Navigation2D", task, HORIZON, episode, 3, seed=5, stochastic=True)
        np.testing.assert_array_equal(recording.rewards.T.astype(np.float32), np.stack([rewards[0], rewards[episode - 1]]))
        assert recording.lengths.tolist() == [HORIZON, HORIZON] and recording.qpos.shape == (HORIZON, 2, 2)
    mean = record_trial(run.policy, "Navigation2D", task, HORIZON, 3, 3, seed=5)
    assert np.array_equal(mean.qpos[0], recording.qpos[0])  # the same resets
    assert not np.array_equal(mean.qpos[-1], recording.qpos[-1])
    # Navigation2D's last position is the final observation, past the last recorded state.
    assert not np.array_equal(mean.final_qpos[1], mean.qpos[-1, 1])


def test_cli_renders_an_rl2_run_and_checks_its_settings(rl2_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trial.gif"
    assert main([str(rl2_run), "--task", '{"goal": [0.3, -0.2]}', "--out", str(out), "--width", "96",
                 "--height", "64", "--adapt-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "return episode 1 of the trial" in printed and "episode 3 of the trial" in printed
    assert read_frames(out).shape[1:] == (64, 2 * 96 + 2, 3)
    assert main([str(rl2_run), "--task", '{"goal": [0.3, -0.2]}', "--out", str(out), "--width", "96",
                 "--height", "64", "--adapt-steps", "3"]) == 0
    assert "episode 4 is past the trials of 3 episodes" in capsys.readouterr().err
    for args, message in [(["--adapt-steps", "0"], "adapt_steps: an RL^2 run's 'after' episode is episode"),
                          (["--fast-lr", "0.1"], "fast_lr: an RL^2 run adapts in its activations")]:
        with pytest.raises(SystemExit) as exit_info:
            main([str(rl2_run), "--task", '{"goal": [0.3, -0.2]}', "--out", str(tmp_path / "x.gif"), *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists()
