// Ant-v5: a quadruped. Observation = qpos[2:] (13) + qvel (14) + clipped external contact
// forces of every body but the world (13 x 6 = 78): 105 values.
#include <algorithm>
#include <cmath>

#include "../mujoco_robot.h"
#include "robots.h"

namespace bmaml {
namespace {

constexpr double kContactForceLimit = 1.0;  // contact_force_range (-1, 1)
constexpr double kHealthyZMin = 0.2, kHealthyZMax = 1.0;
constexpr int kTorso = 1;  // main_body: Gymnasium measures velocity at the torso's frame

double clip_force(double f) { return std::clamp(f, -kContactForceLimit, kContactForceLimit); }

class Ant : public MujocoRobot {
 public:
  explicit Ant(const std::string& xml_path)
      : MujocoRobot({.name = "Ant", .frame_skip = 5, .nq = 15, .nv = 14, .nu = 8, .obs_dim = 105,
                     .has_health = true, .ctrl_cost_weight = 5e-3, .survive_reward = 0.05,
                     .needs_contact_forces = true},
                    xml_path) {}

  void observe(const mjData* d, double* obs) const override {
    const mjModel* m = model();
    for (int i = 2; i < m->nq; ++i) *obs++ = d->qpos[i];
    for (int i = 0; i < m->nv; ++i) *obs++ = d->qvel[i];
    for (int i = 6; i < 6 * m->nbody; ++i) *obs++ = clip_force(d->cfrc_ext[i]);
  }

  // The torso's frame position, one physics substep behind the state after mj_step, exactly
  // as Gymnasium's data.body(main_body).xpos.
  void position(const mjData* d, double* xy) const override {
    xy[0] = d->xpos[3 * kTorso];
    xy[1] = d->xpos[3 * kTorso + 1];
  }

  bool healthy(const mjData* d) const override {
    const mjModel* m = model();
    for (int i = 0; i < m->nq; ++i)
      if (!std::isfinite(d->qpos[i])) return false;
    for (int i = 0; i < m->nv; ++i)
      if (!std::isfinite(d->qvel[i])) return false;
    return kHealthyZMin <= d->qpos[2] && d->qpos[2] <= kHealthyZMax;
  }

  double contact_cost(const mjData* d) const override {
    double sum = 0.0;
    for (int i = 0; i < 6 * model()->nbody; ++i) {
      const double f = clip_force(d->cfrc_ext[i]);
      sum += f * f;
    }
    return sum;
  }
};

}  // namespace

std::unique_ptr<MujocoRobot> make_ant(const std::string& xml_path) {
  return std::make_unique<Ant>(xml_path);
}

}  // namespace bmaml
