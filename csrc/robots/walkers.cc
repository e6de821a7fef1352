// Hopper-v5 and Walker2d-v5: planar legged robots that must stay upright. Observation =
// qpos[1:] + clip(qvel, -10, 10); healthy while the torso height and angle stay in range (and,
// for the Hopper, every other state value within +-100), all bounds strict as in Gymnasium.
#include <algorithm>
#include <cmath>

#include "../mujoco_robot.h"
#include "robots.h"

namespace bmaml {
namespace {

constexpr double kVelocityClip = 10.0;

struct HealthyRange {
  double z_min, z_max;          // qpos[1], the torso's height
  double angle_min, angle_max;  // qpos[2], the torso's pitch
  double state_bound;           // |qpos[2:]|, |qvel| < state_bound (infinite: not checked)
};

class PlanarWalker : public MujocoRobot {
 public:
  PlanarWalker(const Options& options, const HealthyRange& range, const std::string& xml_path)
      : MujocoRobot(options, xml_path), range_(range) {}

  void observe(const mjData* d, double* obs) const override {
    const mjModel* m = model();
    for (int i = 1; i < m->nq; ++i) *obs++ = d->qpos[i];
    for (int i = 0; i < m->nv; ++i) *obs++ = std::clamp(d->qvel[i], -kVelocityClip, kVelocityClip);
  }

  void position(const mjData* d, double* xy) const override {
    xy[0] = d->qpos[0];
    xy[1] = 0.0;
  }

  bool healthy(const mjData* d) const override {
    const mjModel* m = model();
    const double b = range_.state_bound;
    if (std::isfinite(b)) {
      for (int i = 2; i < m->nq; ++i)
        if (!(-b < d->qpos[i] && d->qpos[i] < b)) return false;
      for (int i = 0; i < m->nv; ++i)
        if (!(-b < d->qvel[i] && d->qvel[i] < b)) return false;
    }
    const double z = d->qpos[1], angle = d->qpos[2];
    return range_.z_min < z && z < range_.z_max && range_.angle_min < angle && angle < range_.angle_max;
  }

 private:
  HealthyRange range_;
};

MujocoRobot::Options walker_options(const char* name, int nq, int nu) {
  return {.name = name, .frame_skip = 4, .nq = nq, .nv = nq, .nu = nu, .obs_dim = 2 * nq - 1,
          .has_health = true, .ctrl_cost_weight = 1e-3, .survive_reward = 1.0,
          .uniform_qvel_noise = true, .reset_noise_scale = 5e-3};
}

}  // namespace

std::unique_ptr<MujocoRobot> make_hopper(const std::string& xml_path) {
  return std::make_unique<PlanarWalker>(walker_options("Hopper", 6, 3),
                                        HealthyRange{0.7, INFINITY, -0.2, 0.2, 100.0}, xml_path);
}

std::unique_ptr<MujocoRobot> make_walker2d(const std::string& xml_path) {
  return std::make_unique<PlanarWalker>(walker_options("Walker2d", 9, 6),
                                        HealthyRange{0.8, 2.0, -1.0, 1.0, INFINITY}, xml_path);
}

}  // namespace bmaml
