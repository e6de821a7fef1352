#include "vec_env.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>

#include "mujoco_robot.h"

namespace bmaml {

VecEnv::VecEnv(std::shared_ptr<const Robot> robot, Objective objective, int num_envs,
               int num_threads, int max_episode_steps, uint64_t seed)
    : robot_(std::move(robot)),
      objective_(objective),
      num_envs_(num_envs),
      max_episode_steps_(max_episode_steps),
      task_width_(kTaskParams + static_cast<int>(robot_->physics_columns().size())),
      has_physics_(task_width_ > kTaskParams),
      pool_(std::min(num_threads, num_envs)),
      rngs_(num_envs),
      tasks_(static_cast<size_t>(num_envs) * task_width_, 0.0),
      steps_(num_envs, 0),
      last_obs_(static_cast<size_t>(num_envs) * robot_->spec().obs_dim, 0.0),
      warnings_(num_envs) {
  for (int w = 0; w < pool_.num_threads(); ++w) workspaces_.push_back(robot_->make_workspace());
  sims_.reserve(num_envs);
  for (int i = 0; i < num_envs; ++i) {
    sims_.push_back(robot_->make_sim());
    rngs_[i].seed(seed, i);
  }
  // Until set_tasks: the asset's physics, so that a reset before it simulates a real robot.
  const auto& columns = robot_->physics_columns();
  for (int i = 0; i < num_envs; ++i)
    for (size_t c = 0; c < columns.size(); ++c)
      tasks_[static_cast<size_t>(i) * task_width_ + kTaskParams + c] = columns[c].default_value;
}

Workspace& VecEnv::workspace(std::ptrdiff_t i, int w) {
  Workspace& ws = *workspaces_[w];
  if (has_physics_) robot_->load_physics(ws, &tasks_[static_cast<size_t>(i) * task_width_ + kTaskParams]);
  return ws;
}

std::ptrdiff_t VecEnv::chunk() const {
  // Small chunks balance robots whose contacts make some steps dearer; a few per thread.
  return std::max<std::ptrdiff_t>(1, num_envs_ / (8 * pool_.num_threads()));
}

void VecEnv::set_tasks(const double* tasks) {
  std::memcpy(tasks_.data(), tasks, tasks_.size() * sizeof(double));
}

void VecEnv::reset_env(std::ptrdiff_t i, Workspace& ws, double* obs_row) {
  const int obs_dim = spec().obs_dim;
  sims_[i]->reset(rngs_[i], ws, obs_row);
  steps_[i] = 0;
  std::memcpy(&last_obs_[static_cast<size_t>(i) * obs_dim], obs_row, obs_dim * sizeof(double));
}

void VecEnv::reset(const uint64_t* seed, double* obs) {
  const int obs_dim = spec().obs_dim;
  pool_.parallel_for(num_envs_, chunk(), [&](std::ptrdiff_t i, int w) {
    if (seed) rngs_[i].seed(*seed, i);
    warnings_[i].clear();
    reset_env(i, workspace(i, w), obs + static_cast<size_t>(i) * obs_dim);
  });
}

void VecEnv::reset_streams(const uint64_t* seeds, const uint64_t* streams, double* obs) {
  const int obs_dim = spec().obs_dim;
  pool_.parallel_for(num_envs_, chunk(), [&](std::ptrdiff_t i, int w) {
    rngs_[i].seed(seeds[i], streams[i]);
    warnings_[i].clear();
    reset_env(i, workspace(i, w), obs + static_cast<size_t>(i) * obs_dim);
  });
}

void VecEnv::set_state(const double* qpos, const double* qvel, double* obs) {
  const RobotSpec& s = spec();
  pool_.parallel_for(num_envs_, chunk(), [&](std::ptrdiff_t i, int w) {
    double* obs_row = obs + static_cast<size_t>(i) * s.obs_dim;
    sims_[i]->set_state(qpos + static_cast<size_t>(i) * s.nq, qvel + static_cast<size_t>(i) * s.nv,
                        workspace(i, w), obs_row);
    steps_[i] = 0;
    std::memcpy(&last_obs_[static_cast<size_t>(i) * s.obs_dim], obs_row, s.obs_dim * sizeof(double));
  });
}

void VecEnv::get_state(double* qpos, double* qvel) {
  const RobotSpec& s = spec();
  for (int i = 0; i < num_envs_; ++i)
    sims_[i]->get_state(*workspaces_[0], qpos + static_cast<size_t>(i) * s.nq,
                        qvel + static_cast<size_t>(i) * s.nv);
}

void VecEnv::step_env(std::ptrdiff_t i, Workspace& ws, const double* action,
                      const StepBuffers& out) {
  const RobotSpec& s = spec();
  const size_t row = static_cast<size_t>(i) * s.obs_dim;
  double* obs_row = out.obs + row;
  const double* task = &tasks_[static_cast<size_t>(i) * task_width_];

  double clipped[64];  // act_dim is checked against this bound when the robot is made
  for (int j = 0; j < s.act_dim; ++j)
    clipped[j] = std::clamp(action[j], s.action_low[j], s.action_high[j]);

  Motion motion;
  Instability why = Instability::kNone;
  warnings_[i].clear();
  try {
    WarningCapture capture(&warnings_[i]);
    why = sims_[i]->step(clipped, ws, &motion, obs_row);
  } catch (const std::exception& e) {
    why = Instability::kSimulatorError;
    warnings_[i] = e.what();
  }
  if (why == Instability::kNone) {
    for (int j = 0; j < s.obs_dim; ++j) {
      if (!std::isfinite(obs_row[j])) {
        why = Instability::kNonFiniteObs;
        break;
      }
    }
  }

  double* terms = out.reward_terms + static_cast<size_t>(i) * kNumRewardTerms;
  out.instability[i] = static_cast<int32_t>(why);
  if (why != Instability::kNone) {
    // Unusable step: end the episode as truncated, with no reward, at the last good observation.
    std::fill(terms, terms + kNumRewardTerms, 0.0);
    out.reward[i] = 0.0;
    out.x_velocity[i] = 0.0;
    out.terminated[i] = 0;
    out.truncated[i] = 1;
    std::memcpy(out.final_obs + row, &last_obs_[row], s.obs_dim * sizeof(double));
    reset_env(i, ws, obs_row);
    return;
  }

  const RewardTerms r = objective_.reward(s, task, motion, clipped);
  terms[0] = r.task;
  terms[1] = r.ctrl;
  terms[2] = r.contact;
  terms[3] = r.survive;
  out.reward[i] = r.total();
  out.x_velocity[i] = motion.x_velocity;
  const bool terminated = objective_.terminated(s, task, motion);
  const bool truncated = !terminated && ++steps_[i] >= max_episode_steps_;
  out.terminated[i] = terminated;
  out.truncated[i] = truncated;
  if (terminated || truncated) {
    std::memcpy(out.final_obs + row, obs_row, s.obs_dim * sizeof(double));
    reset_env(i, ws, obs_row);
  } else {
    std::memcpy(&last_obs_[row], obs_row, s.obs_dim * sizeof(double));
  }
}

void VecEnv::hold_env(std::ptrdiff_t i, const StepBuffers& out) {
  const int obs_dim = spec().obs_dim;
  const size_t row = static_cast<size_t>(i) * obs_dim;
  std::memcpy(out.obs + row, &last_obs_[row], obs_dim * sizeof(double));  // the current one
  double* terms = out.reward_terms + static_cast<size_t>(i) * kNumRewardTerms;
  std::fill(terms, terms + kNumRewardTerms, 0.0);
  out.reward[i] = 0.0;
  out.x_velocity[i] = 0.0;
  out.terminated[i] = 0;
  out.truncated[i] = 0;
  out.instability[i] = static_cast<int32_t>(Instability::kNone);
}

void VecEnv::step(const double* actions, const uint8_t* hold, const StepBuffers& out) {
  const int act_dim = spec().act_dim;
  if (!hold) {  // the samplers' loop, as it always was
    pool_.parallel_for(num_envs_, chunk(), [&](std::ptrdiff_t i, int w) {
      step_env(i, workspace(i, w), actions + static_cast<size_t>(i) * act_dim, out);
    });
    return;
  }
  pool_.parallel_for(num_envs_, chunk(), [&](std::ptrdiff_t i, int w) {
    if (hold[i]) {
      hold_env(i, out);
    } else {
      step_env(i, workspace(i, w), actions + static_cast<size_t>(i) * act_dim, out);
    }
  });
}

}  // namespace bmaml
