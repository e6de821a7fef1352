// Swimmer-v5: a three-link swimmer in viscous fluid. Observation = qpos[2:] (3) + qvel (5).
#include "../mujoco_robot.h"
#include "robots.h"

namespace bmaml {
namespace {

class Swimmer : public MujocoRobot {
 public:
  explicit Swimmer(const std::string& xml_path)
      : MujocoRobot({.name = "Swimmer", .frame_skip = 4, .nq = 5, .nv = 5, .nu = 2, .obs_dim = 8,
                     .uniform_qvel_noise = true},
                    xml_path) {}

  void observe(const mjData* d, double* obs) const override {
    const mjModel* m = model();
    for (int i = 2; i < m->nq; ++i) *obs++ = d->qpos[i];
    for (int i = 0; i < m->nv; ++i) *obs++ = d->qvel[i];
  }

  void position(const mjData* d, double* xy) const override {
    xy[0] = d->qpos[0];
    xy[1] = d->qpos[1];
  }
};

}  // namespace

std::unique_ptr<MujocoRobot> make_swimmer(const std::string& xml_path) {
  return std::make_unique<Swimmer>(xml_path);
}

}  // namespace bmaml
