"""Sample a meta-batch across machines with Ray: ``W`` actors, each with its own batched env.

``RaySampler`` has ``MetaSampler``'s interface (``set_tasks``, ``sample(policy, params, seed)``,
``env_steps``, ``obs_dim``, ``act_dim``, ``close``). The meta-batch's tasks are cut into ``W``
contiguous slices fixed by task index; worker ``w`` owns slice ``w`` and samples it on its own
C++ batched env with ``threads_per_worker`` threads. Because ``MetaSampler`` draws every task's
randomness from ``(seed, task index)`` and computes each task's policy forward independently of
the others, the episodes are bit-identical to the local sampler's: where tasks run changes
nothing but the time it takes.

Per sampling phase (one ``sample`` call):

- out: the meta-policy's ``state_dict`` and, after adaptation, the per-task parameters
  (``{name: float32 [K, *shape]}``), as numpy arrays in ONE object (``ray.put`` once), passed by
  reference to every worker (Ray copies it once per node). The policy's structure (a pickled
  module) is put once per policy object and cached by the workers.
- back: each worker's episodes as numpy arrays (float32 observations, actions, rewards,
  log-probs, last observations; bool mask and terminations), concatenated in task order here.

A worker that dies (its process killed, its node lost) is replaced by a new actor, which samples
the same tasks again with the same seeds, so the batch is unchanged; each replacement is logged
(``logging`` warning) and counted in ``workers_restarted``.

Ray is optional: ``pip install "bmaml-robot[ray]"``. Every node must be able to import this
package (install it on every node, or ship it with a ``runtime_env``); see ``docs/ray.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bmaml_robot.meta.episodes import Episodes
from bmaml_robot_deploy.checks import check_int

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "bmaml-robot[ray]"'
#: A sampling phase with no worker done for this long logs a warning (and keeps waiting).
WAIT_LOG_S = 600.0

#: Fields of ``Episodes`` a worker sends back, in order; ``mask`` travels as bool.
EPISODE_FIELDS = ("observations", "actions", "rewards", "mask", "terminated", "last_observations", "log_probs")


def import_ray() -> Any:
    """The ``ray`` module, or ImportError with the command that installs it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            f"the Ray sampler needs Ray, which is not installed; install it with: {INSTALL_HINT}"
        ) from error
    return ray


def task_slices(num_tasks: int, num_workers: int) -> list[tuple[int, int]]:
    """``num_workers`` contiguous ``(start, stop)`` slices of ``range(num_tasks)``, sizes differing
    by at most one (the first ``num_tasks % num_workers`` slices one larger)."""
    base, extra = divmod(num_tasks, num_workers)
    slices, start = [], 0
    for w in range(num_workers):
        stop = start + base + (1 if w < extra else 0)
        slices.append((start, stop))
        start = stop
    return slices


class _SamplerWorker:
    """One Ray actor: a ``MetaSampler`` for tasks ``first_task .. first_task + num_tasks - 1``, or
    with ``trials`` RL^2's ``TrialSampler`` (``episodes_per_task``: episodes per trial)."""

    def __init__(
        self,
        family: str,
        first_task: int,
        num_tasks: int,
        episodes_per_task: int,
        horizon: int,
        num_threads: int,
        action_scale: float | None = None,
        trials: bool = False,
    ) -> None:
        from bmaml_robot.meta.sampler import MetaSampler
        from bmaml_robot.rl2.sampler import TrialSampler

        torch.set_num_threads(1)  # what the local trainer uses; MetaSampler enforces it anyway
        self.first_task = first_task
        self.trials = trials
        kind = TrialSampler if trials else MetaSampler
        self.sampler: Any = kind(
            family, num_tasks, episodes_per_task, horizon, num_threads=num_threads, action_scale=action_scale
        )
        self.policies: dict[str, Any] = {}  # policy structure by object id (see RaySampler._policy_ref)

    def ready(self) -> dict[str, int]:
        """Sizes and the process id (tests kill it)."""
        return {"obs_dim": self.sampler.obs_dim, "act_dim": self.sampler.act_dim, "pid": os.getpid()}

    def sample(
        self, payload: Mapping[str, Any], policy_box: list, tasks: Sequence[Mapping[str, Any]], seed: int
    ) -> dict[str, Any]:
        """Sample this worker's tasks; ``payload`` is ``{"state": {name: array}, "params":
        {name: array [K_all, ...]} or None}``, ``policy_box`` ``[ObjectRef of the policy]``."""
        import ray

        ref = policy_box[0]
        policy = self.policies.get(ref.hex())
        if policy is None:
            policy = ray.get(ref)
            self.policies = {ref.hex(): policy}  # one policy at a time: drop older ones
        policy.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in payload["state"].items()})
        start, stop = self.first_task, self.first_task + self.sampler.num_tasks
        params = payload["params"]
        if params is not None:
            params = {name: torch.from_numpy(np.array(value[start:stop])) for name, value in params.items()}
        self.sampler.set_tasks(tasks)
        steps_before = self.sampler.env_steps
        out: dict[str, Any]
        if self.trials:
            trials = self.sampler.sample(policy, seed, first_task=start)
            out = {name: value.numpy() for name, value in zip(trials._fields, trials)}
        else:
            episodes = self.sampler.sample(policy, params, seed, first_task=start)
            out = {name: getattr(episodes, name).numpy() for name in EPISODE_FIELDS}
            out["mask"] = out["mask"] > 0
        out["env_steps"] = self.sampler.env_steps - steps_before
        return out


class RaySampler:
    """``MetaSampler``'s interface over ``num_workers`` Ray actors (see the module doc).

    Args:
        family, num_tasks, episodes_per_task, horizon, action_scale: as ``MetaSampler``.
        num_workers: Ray actors (at most ``num_tasks``); worker ``w`` samples the tasks of
            ``task_slices(num_tasks, num_workers)[w]``.
        threads_per_worker: threads of each worker's batched env (and CPUs it reserves).
        address: an existing Ray cluster (``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:10001"``);
            ``None`` or ``""``: start a local Ray instance with ``num_workers *
            threads_per_worker`` CPUs. If this process is already connected to Ray, that
            connection is used (and left open by ``close``).
        max_replacements: replacements of one slice's worker within one ``sample`` call before
            it gives up (RuntimeError).
        start_timeout_s: how long the workers may take to start (placed on CPUs, imports, envs
            built) before RuntimeError; a cluster without ``num_workers * threads_per_worker``
            free CPUs would otherwise wait for them forever.

    Attributes:
        env_steps: env steps taken so far (valid ones), as ``MetaSampler.env_steps``.
        workers_restarted: workers replaced so far (each one logged as a warning).
        bytes_to_workers, bytes_from_workers: array bytes sent so far each way (parameters out,
            episodes back), counted from the arrays' sizes.
    """

    def __init__(
        self,
        family: str,
        num_tasks: int,
        episodes_per_task: int,
        horizon: int,
        *,
        action_scale: float | None = None,
        num_workers: int = 2,
        threads_per_worker: int = 1,
        address: str | None = None,
        max_replacements: int = 3,
        start_timeout_s: float = 300.0,
        trials: bool = False,
    ) -> None:
        for name, value in (
            ("num_tasks", num_tasks),
            ("episodes_per_task", episodes_per_task),
            ("horizon", horizon),
            ("num_workers", num_workers),
            ("threads_per_worker", threads_per_worker),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        check_int(max_replacements, "max_replacements", minimum=0)
        if num_workers > num_tasks:
            raise ValueError(f"num_workers: expected at most num_tasks={num_tasks} workers, got {num_workers}")
        if (
            isinstance(start_timeout_s, bool)
            or not isinstance(start_timeout_s, (int, float))
            or not start_timeout_s > 0
        ):
            raise ValueError(f"start_timeout_s: expected a positive number of seconds, got {start_timeout_s!r}")
        if address is not None and not isinstance(address, str):
            raise ValueError(f"address: expected a Ray address string or None, got {address!r}")
        self.ray = ray = import_ray()
        self.family = family
        self.num_tasks = num_tasks
        self.episodes_per_task = episodes_per_task
        self.horizon = horizon
        self.action_scale = action_scale
        self.num_workers = num_workers
        self.threads_per_worker = threads_per_worker
        self.trials = trials
        self.max_replacements = max_replacements
        self.start_timeout_s = float(start_timeout_s)
        self.slices = task_slices(num_tasks, num_workers)
        self.env_steps = 0
        self.workers_restarted = 0
        self.bytes_to_workers = 0
        self.bytes_from_workers = 0
        self._tasks: list[dict[str, Any]] | None = None
        self._policy: Any = None  # the policy object whose structure _policy_ref holds
        self._policy_ref: Any = None
        self._owns_ray = False
        self._workers: list[Any] = []

        if not ray.is_initialized():
            start_ray(address, num_workers * threads_per_worker)
            self._owns_ray = True
        needed, available = num_workers * threads_per_worker, ray.cluster_resources().get("CPU", 0)
        if available < needed:
            logger.warning(
                "Ray sampler: %d workers x %d threads need %d CPUs, the cluster has %g now; "
                "workers wait for free CPUs (up to %g s)",
                num_workers,
                threads_per_worker,
                needed,
                available,
                self.start_timeout_s,
            )
        self._actor_class = ray.remote(_SamplerWorker)
        try:
            self._workers = [self._start_worker(w) for w in range(num_workers)]
            replies = [self._ready(w, self._workers[w]) for w in range(num_workers)]
        except BaseException:
            self.close()
            raise
        self.obs_dim: int = replies[0]["obs_dim"]
        self.act_dim: int = replies[0]["act_dim"]
        self.worker_pids: list[int] = [r["pid"] for r in replies]

    # ------------------------------------------------------------------ workers
    def _start_worker(self, w: int) -> Any:
        start, stop = self.slices[w]
        return self._actor_class.options(num_cpus=self.threads_per_worker, scheduling_strategy="SPREAD").remote(
            self.family,
            start,
            stop - start,
            self.episodes_per_task,
            self.horizon,
            self.threads_per_worker,
            self.action_scale,
            self.trials,
        )

    def _ready(self, w: int, actor: Any) -> dict[str, int]:
        try:
            return self.ray.get(actor.ready.remote(), timeout=self.start_timeout_s)
        except self.ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"Ray worker {w} did not start within {self.start_timeout_s:g} s: the cluster needs "
                f"{self.num_workers * self.threads_per_worker} free CPUs ({self.num_workers} workers x "
                f"{self.threads_per_worker} threads) and has {self.ray.cluster_resources().get('CPU', 0):g}"
            ) from None
        except self.ray.exceptions.RayActorError as error:
            if "ModuleNotFoundError" in str(error) or "No module named" in str(error):
                raise RuntimeError(
                    f"Ray worker {w} cannot import bmaml_robot: install the package on every node of the "
                    f"cluster ({INSTALL_HINT}, the same version as here) or ship it in a runtime_env; "
                    "see docs/ray.md"
                ) from error
            raise

    def _replace_worker(self, w: int, error: BaseException) -> None:
        start, stop = self.slices[w]
        self.workers_restarted += 1
        logger.warning(
            "Ray sampler: worker %d (tasks %d..%d) died (%s); replacing it and sampling its tasks "
            "again with the same seeds",
            w,
            start,
            stop - 1,
            type(error).__name__,
        )
        try:
            self.ray.kill(self._workers[w], no_restart=True)
        except Exception:  # already gone
            pass
        self._workers[w] = self._start_worker(w)

    # ------------------------------------------------------------------ sampler interface
    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """``num_tasks`` task dicts; worker ``w`` gets those of its slice with each sample."""
        if len(tasks) != self.num_tasks:
            raise ValueError(f"tasks: expected {self.num_tasks} tasks, got {len(tasks)}")
        self._tasks = [dict(task) for task in tasks]

    @torch.no_grad()
    def sample(self, policy: Any, params: Mapping[str, torch.Tensor] | None, seed: int) -> Episodes:
        """One episode per env, as ``MetaSampler.sample`` (bit-identical results)."""
        return self._gather(self._sample_workers(policy, params, seed))

    def _sample_workers(
        self, policy: Any, params: Mapping[str, torch.Tensor] | None, seed: int
    ) -> list[dict[str, Any]]:
        """Every worker's arrays for ``seed``, in task order; dead workers replaced and resampled."""
        tasks = self._tasks
        if tasks is None:
            raise RuntimeError("sample: call set_tasks first")
        if not self._workers:
            raise RuntimeError("sample: this sampler is closed")
        ray = self.ray
        state = {name: value.detach().cpu().numpy() for name, value in policy.state_dict().items()}
        params_np = None
        if params is not None:
            params_np = {name: np.ascontiguousarray(value.detach().cpu().numpy()) for name, value in params.items()}
            for name, value in params_np.items():
                if value.ndim == 0 or value.shape[0] != self.num_tasks:
                    raise ValueError(
                        f"params[{name!r}]: expected a leading task dimension of {self.num_tasks}, "
                        f"got shape {list(value.shape)}"
                    )
        payload = ray.put({"state": state, "params": params_np})  # once, shared by every worker
        self.bytes_to_workers += payload_bytes(state, params_np)
        if policy is not self._policy:
            self._policy, self._policy_ref = policy, ray.put(policy)

        def submit(w: int) -> Any:
            start, stop = self.slices[w]
            return self._workers[w].sample.remote(payload, [self._policy_ref], tasks[start:stop], int(seed))

        pending = {submit(w): w for w in range(self.num_workers)}
        results: list[dict[str, Any] | None] = [None] * self.num_workers
        replacements = [0] * self.num_workers
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_LOG_S)
            if not ready:  # e.g. a replacement waiting for free CPUs
                logger.warning(
                    "Ray sampler: still waiting for workers %s after %g s", sorted(pending.values()), WAIT_LOG_S
                )
                continue
            w = pending.pop(ready[0])
            try:
                results[w] = ray.get(ready[0])
            except ray.exceptions.RayActorError as error:
                replacements[w] += 1
                if replacements[w] > self.max_replacements:
                    raise RuntimeError(
                        f"Ray sampler: worker {w} died {replacements[w]} times in one sample; giving up"
                    ) from error
                self._replace_worker(w, error)
                pending[submit(w)] = w
        return [r for r in results if r is not None]

    def _gather(self, results: list[dict[str, Any]]) -> Episodes:
        """Concatenate the workers' arrays in task order (tasks are dim 1, or 0 for last_observations)."""
        fields = {}
        for name in EPISODE_FIELDS:
            parts = [r[name] for r in results]
            self.bytes_from_workers += sum(p.nbytes for p in parts)
            joined = np.concatenate(parts, axis=0 if name == "last_observations" else 1)
            tensor = torch.from_numpy(joined)
            fields[name] = tensor.float() if name == "mask" else tensor
        self.env_steps += sum(int(r["env_steps"]) for r in results)
        return Episodes(**fields)

    def close(self) -> None:
        """Stop the workers (and the local Ray instance this sampler started)."""
        ray = self.ray
        for actor in self._workers:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self._workers = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> RaySampler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RayTrialSampler:
    """RL^2's ``TrialSampler`` over Ray actors: worker ``w`` samples the trials of its slice of the
    tasks (``first_task``: the same streams), so the trials are bit-identical to a local
    ``TrialSampler``'s. Args as ``RaySampler`` (keyword ones passed on) with ``episodes_per_trial``
    for ``episodes_per_task``; the workers, their replacement and the byte counts are its
    ``RaySampler``'s (``workers``)."""

    def __init__(self, family: str, num_tasks: int, episodes_per_trial: int, horizon: int, **kwargs: Any) -> None:
        self.workers = RaySampler(family, num_tasks, episodes_per_trial, horizon, trials=True, **kwargs)
        self.num_tasks = num_tasks
        self.episodes_per_trial = episodes_per_trial
        self.obs_dim: int = self.workers.obs_dim
        self.act_dim: int = self.workers.act_dim

    @property
    def env_steps(self) -> int:
        return self.workers.env_steps

    @env_steps.setter
    def env_steps(self, value: int) -> None:  # a resumed run continues its count
        self.workers.env_steps = value

    @property
    def workers_restarted(self) -> int:
        return self.workers.workers_restarted

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        self.workers.set_tasks(tasks)

    @torch.no_grad()
    def sample(self, policy: Any, seed: int) -> Any:
        """One trial per task, as ``TrialSampler.sample``: a ``Trials``."""
        from bmaml_robot.rl2.sampler import Trials

        results = self.workers._sample_workers(policy, None, seed)
        fields = {}
        for name in Trials._fields:
            parts = [r[name] for r in results]
            self.workers.bytes_from_workers += sum(p.nbytes for p in parts)
            fields[name] = torch.from_numpy(np.concatenate(parts, axis=1))  # [L, K, ...]: tasks are dim 1
        self.workers.env_steps += sum(int(r["env_steps"]) for r in results)
        return Trials(**fields)

    def close(self) -> None:
        self.workers.close()


def payload_bytes(state: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray] | None) -> int:
    """Array bytes of one sampling phase's parameters: the meta-policy's state (``P`` floats)
    plus, after adaptation, the per-task parameters (``K x P`` floats)."""
    return sum(v.nbytes for v in state.values()) + (0 if params is None else sum(v.nbytes for v in params.values()))


def _local_runtime_env() -> dict[str, Any]:
    """For a local Ray instance: make this package importable by the workers when it is not
    installed (a source checkout run with ``PYTHONPATH`` or from its root)."""
    root = str(Path(__file__).resolve().parents[2])
    on_path = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    installed = "site-packages" in root or "dist-packages" in root
    if installed or root in on_path:
        return {}
    return {"runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join([root, *filter(None, on_path)])}}}


@contextlib.contextmanager
def _unshadowed_working_directory() -> Iterator[None]:
    """Ray puts the driver's working directory first on every worker's ``sys.path``. From the root
    of a source checkout with the package installed, workers would import the checkout (which has
    no compiled core) instead of the installed package; so Ray is started from the installed
    package's parent directory then (and the working directory restored)."""
    package = Path(__file__).resolve().parents[1]
    here = Path.cwd()
    shadow = here / package.name
    if not shadow.is_dir() or shadow.resolve() == package:
        yield
        return
    os.chdir(package.parent)
    try:
        yield
    finally:
        os.chdir(here)


def start_ray(address: str | None, num_cpus: int) -> None:
    """``ray.init``: connect to the cluster at ``address``, or start a local Ray with ``num_cpus``."""
    ray = import_ray()
    with _unshadowed_working_directory():
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                **_local_runtime_env(),
            )


__all__ = ["EPISODE_FIELDS", "INSTALL_HINT", "RaySampler", "import_ray", "payload_bytes", "start_ray", "task_slices"]
