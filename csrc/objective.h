// Objectives: what a robot is asked to do in a task family, as rewards and terminations on its Motion.
//
// Rewards follow the MAML reference code (pytorch-maml-rl's maml_rl/envs; Finn et al. 2017):
//   direction:  reward_task = direction * v_x
//   velocity:   reward_task = -|v_x - goal_velocity|             (+1 for robots with a healthy range)
//   goal:       reward_task = -(|x - goal_x| + |y - goal_y|)     (+4 for robots with a healthy range)
//   navigation: reward_task = -||(x, y) - goal||_2, terminated within 0.01 of the goal per axis
// plus reward_ctrl = -ctrl_cost_weight |a|^2 on the robot's (clipped) action (0.05; Ant 0.5e-2)
// and, for robots with a healthy range, reward_survive = RobotSpec::survive_reward while healthy
// (Ant 0.05; Hopper, Walker2d 1, Gymnasium's), termination when unhealthy, and
// reward_contact = -5e-4 * sum(clip(cfrc_ext, -1, 1)^2) (Ant; 0 for robots that observe no forces). The reference adds
// the +1 / +4 to the Ant's velocity and goal terms because it terminates early: an always-negative
// per-step reward would teach it to fall over at once.
#pragma once

#include <string>

#include "robot.h"

namespace bmaml {

enum class ObjectiveKind : int { kDirection = 0, kVelocity = 1, kGoal = 2, kNavigation = 3 };

// Every task is at most two numbers: direction, goal velocity, or a goal position.
constexpr int kTaskParams = 2;

// The reward terms of one step; the reward is their sum.
struct RewardTerms {
  double task = 0.0;
  double ctrl = 0.0;
  double contact = 0.0;
  double survive = 0.0;
  double total() const { return task + ctrl + contact + survive; }
};
constexpr int kNumRewardTerms = 4;

struct Objective {
  ObjectiveKind kind = ObjectiveKind::kDirection;
  double contact_cost_weight = 5e-4;
  double velocity_offset = 1.0;  // added to the velocity and goal task terms of robots with a
  double goal_offset = 4.0;      // healthy range (see above)

  // task [kTaskParams]; action [act_dim], the clipped action that was applied.
  RewardTerms reward(const RobotSpec& spec, const double* task, const Motion& motion,
                     const double* action) const;
  bool terminated(const RobotSpec& spec, const double* task, const Motion& motion) const;
};

ObjectiveKind objective_kind_from_name(const std::string& name);

}  // namespace bmaml
