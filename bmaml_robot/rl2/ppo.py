"""PPO for RL^2: the slow, model-free learner of the prefrontal-cortex model ("the dopamine system").

One update per meta-iteration: GAE over each whole trial (the trial is RL^2's episode: the
discount runs across its episode boundaries and the value is 0 after its last step), advantages
normalised over the batch, then ``epochs`` passes over minibatches of whole trials, each a
backpropagation through time from the trial's zero state, with the clipped surrogate
(Schulman et al. 2017), a value loss and an entropy bonus, Adam and gradient-norm clipping.

The value head learns normalised returns: the robots' discounted returns are around -100 per
step while a zero-initialised linear head on a tanh state moves by Adam's step size, so with raw
targets the critic never catches up (explained variance ~0, measured on HalfCheetahVel) and its
gradient, clipped together with the policy's, drowns the policy's. ``ReturnScale`` keeps the
running mean and standard deviation of the returns seen (all batches so far); the head predicts
``(R - mean) / std`` and GAE uses ``mean + std * v`` (value normalisation, as PopArt without the
output-preserving rescale: the statistics settle within a few iterations).

Minibatches are drawn from a generator seeded by the caller (the iteration's seed), so an update
depends only on the trials and that seed; the optimiser's state and the return statistics are the
learner's ``state_dict`` (a resumed run repeats an uninterrupted one).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bmaml_robot.gae import gae
from bmaml_robot.rl2.policy import RL2Policy
from bmaml_robot.rl2.sampler import Trials


class ReturnScale:
    """Running mean and variance of returns (float64; Chan et al.'s parallel update, batch by batch)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 0.0

    def update(self, returns: Tensor) -> None:
        """Add the returns ``[n]`` of one batch."""
        batch = returns.double()
        n, mean, var = float(batch.numel()), float(batch.mean()), float(batch.var(unbiased=False))
        total = self.count + n
        delta = mean - self.mean
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self) -> float:
        return max(self.var, 1e-8) ** 0.5

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


class PPOLearner:
    """Clipped-surrogate PPO over whole trials.

    Args:
        policy: the ``RL2Policy`` it trains (in place).
        learning_rate: Adam's step size.
        clip: the ratio clip ``epsilon``.
        epochs: passes over the batch per update.
        minibatches: minibatches (of whole trials) per pass.
        value_coef: weight of the value loss ``0.5 (v - (R - mean) / std)^2`` (normalised returns).
        entropy_coef: weight of the entropy bonus.
        max_grad_norm: gradient-norm clip per minibatch step.
        gamma, gae_lambda: GAE's discount and lambda.
        target_kl: 0, or stop the update's remaining minibatch steps (and epochs) at the first
            minibatch whose approximate KL from the policy that sampled the trials exceeds
            1.5 x target_kl, before its step (as Stable-Baselines3's ``target_kl``, Spinning Up's
            PPO): a guard against the late collapse of long runs with a large learning rate.
    """

    def __init__(
        self, policy: RL2Policy, *, learning_rate: float = 1e-3, clip: float = 0.2, epochs: int = 5,
        minibatches: int = 4, value_coef: float = 0.5, entropy_coef: float = 0.0, max_grad_norm: float = 0.5,
        gamma: float = 0.99, gae_lambda: float = 0.95, target_kl: float = 0.0,
    ) -> None:
        self.policy = policy
        self.target_kl = target_kl
        self.clip = clip
        self.epochs = epochs
        self.minibatches = minibatches
        self.value_coef = value_coef
        self.entropy_coef = entropy_coef
        self.max_grad_norm = max_grad_norm
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.optimizer = torch.optim.Adam(policy.trainable_parameters(), lr=learning_rate)
        self.return_scale = ReturnScale()

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's state (moments, step counts) and the return statistics."""
        return {"optimizer": self.optimizer.state_dict(), "return_scale": self.return_scale.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.return_scale.load_state_dict(state["return_scale"])

    @torch.no_grad()
    def advantages(self, trials: Trials) -> tuple[Tensor, Tensor, Tensor]:
        """``(advantages, returns, values)``, each float32 ``[L, K]`` (zeros on masked steps):
        GAE over each trial with the current value head (in return units); advantages normalised
        over the batch's steps."""
        _, _, normalised = self.policy.evaluate(trials.inputs)
        mask = trials.mask
        values = (self.return_scale.mean + self.return_scale.std * normalised) * mask
        valid = mask.bool()
        # The trial's last step is its end: no bootstrap (a trial is finite by design).
        last = valid & ~torch.cat([valid[1:], torch.zeros_like(valid[:1])])
        adv, ret = gae(trials.rewards.double().numpy(), values.double().numpy(), last.numpy(),
                       np.zeros_like(last.numpy()), np.zeros(mask.shape[1]), self.gamma, self.gae_lambda)
        advantages = torch.from_numpy(adv).float() * mask
        returns = torch.from_numpy(ret).float() * mask
        count = mask.sum()
        mean = advantages.sum() / count
        std = (((advantages - mean) * mask) ** 2).sum().div(count).sqrt()
        return (advantages - mean) * mask / (std + 1e-8), returns, values

    def update(self, trials: Trials, seed: int) -> dict[str, float]:
        """One PPO update on ``trials``; returns its figures (losses of the last pass, means over its
        minibatches; ``approx_kl`` and ``clip_fraction`` of the last pass; the explained variance of
        the values before the update)."""
        advantages, returns, values_before = self.advantages(trials)
        self.return_scale.update(returns[trials.mask.bool()])
        targets = (returns - self.return_scale.mean) / self.return_scale.std  # what the value head learns
        K = trials.num_tasks
        size = -(-K // min(self.minibatches, K))
        generator = torch.Generator().manual_seed(int(seed))
        kl_limit = 1.5 * self.target_kl if self.target_kl > 0 else math.inf
        figures: dict[str, list[float]] = {}
        epochs_run = 0
        for _ in range(self.epochs):
            order = torch.randperm(K, generator=generator)
            epoch: dict[str, list[float]] = {}
            stopped = False
            for start in range(0, K, size):
                index = order[start : start + size]
                batch = trials.select_tasks(index)
                step = self._minibatch_step(batch, advantages.index_select(1, index), targets.index_select(1, index),
                                            kl_limit)
                if step is None:
                    stopped = True
                    break
                for key, value in step.items():
                    epoch.setdefault(key, []).append(value)
            if epoch:
                figures, epochs_run = epoch, epochs_run + 1
            if stopped:
                break
        mask = trials.mask.bool()
        residual = (returns - values_before)[mask]
        explained = 1.0 - float(residual.var() / returns[mask].var().clamp_min(1e-12))
        out = {**{key: float(np.mean(values)) for key, values in figures.items()}, "explained_variance": explained}
        if self.target_kl > 0:  # (runs without the guard keep their metrics as they were)
            out["ppo_epochs_run"] = float(epochs_run)
        return out

    def _minibatch_step(self, batch: Trials, advantages: Tensor, targets: Tensor,
                        kl_limit: float = math.inf) -> dict[str, float] | None:
        """One Adam step on a minibatch of whole trials; ``targets``: normalised returns ``[L, k]``.
        None, and no step, when the policy is already more than ``kl_limit`` (approximate KL) from
        the one that sampled the trials."""
        out, log_std, values = self.policy.evaluate(batch.inputs)
        log_probs = self.policy.log_prob(out, log_std, batch.actions)
        mask = batch.mask
        count = mask.sum()

        def mean(x: Tensor) -> Tensor:
            return (x * mask).sum() / count

        log_ratio = (log_probs - batch.log_probs) * mask
        ratio = log_ratio.exp()
        surrogate = torch.min(ratio * advantages, ratio.clamp(1 - self.clip, 1 + self.clip) * advantages)
        policy_loss = -mean(surrogate)
        value_loss = 0.5 * mean((values - targets) ** 2)
        entropy = mean(self.policy.entropy(out, log_std))
        loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
        with torch.no_grad():
            approx_kl = mean((ratio - 1) - log_ratio)  # Schulman's k3 estimator, >= 0
            clip_fraction = mean(((ratio - 1).abs() > self.clip).float())
        if float(approx_kl) > kl_limit:
            return None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.trainable_parameters(), self.max_grad_norm)
        self.optimizer.step()
        return {"policy_loss": float(policy_loss.detach()), "value_loss": float(value_loss.detach()),
                "entropy": float(entropy.detach()),
                "approx_kl": float(approx_kl), "clip_fraction": float(clip_fraction), "grad_norm": float(grad_norm)}
