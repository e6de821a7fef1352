#include "objective.h"

#include <cmath>
#include <stdexcept>

namespace bmaml {

RewardTerms Objective::reward(const RobotSpec& spec, const double* task, const Motion& motion,
                              const double* action) const {
  RewardTerms r;
  switch (kind) {
    case ObjectiveKind::kDirection:
      r.task = task[0] * motion.x_velocity;
      break;
    case ObjectiveKind::kVelocity:
      r.task = -std::abs(motion.x_velocity - task[0]) + (spec.has_health ? velocity_offset : 0.0);
      break;
    case ObjectiveKind::kGoal:
      r.task = -(std::abs(motion.x_position - task[0]) + std::abs(motion.y_position - task[1])) +
               (spec.has_health ? goal_offset : 0.0);
      break;
    case ObjectiveKind::kNavigation:
      r.task = -std::hypot(motion.x_position - task[0], motion.y_position - task[1]);
      return r;  // the point robot pays no control cost
  }
  double action_sq = 0.0;
  for (int i = 0; i < spec.act_dim; ++i) action_sq += action[i] * action[i];
  r.ctrl = -spec.ctrl_cost_weight * action_sq;
  if (spec.has_health) {
    r.contact = -contact_cost_weight * motion.contact_cost;
    r.survive = motion.healthy ? spec.survive_reward : 0.0;
  }
  return r;
}

bool Objective::terminated(const RobotSpec& spec, const double* task, const Motion& motion) const {
  if (kind == ObjectiveKind::kNavigation) {
    return std::abs(motion.x_position - task[0]) < 0.01 &&
           std::abs(motion.y_position - task[1]) < 0.01;
  }
  return spec.has_health && !motion.healthy;
}

ObjectiveKind objective_kind_from_name(const std::string& name) {
  if (name == "direction") return ObjectiveKind::kDirection;
  if (name == "velocity") return ObjectiveKind::kVelocity;
  if (name == "goal") return ObjectiveKind::kGoal;
  if (name == "navigation") return ObjectiveKind::kNavigation;
  throw std::invalid_argument(
      "objective: expected one of direction, velocity, goal, navigation; got '" + name + "'");
}

}  // namespace bmaml
