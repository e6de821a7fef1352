// HalfCheetah-v5: a planar runner. Observation = qpos[1:] (8) + qvel (9).
#include "../mujoco_robot.h"
#include "robots.h"

namespace bmaml {
namespace {

class HalfCheetah : public MujocoRobot {
 public:
  explicit HalfCheetah(const std::string& xml_path)
      : MujocoRobot({.name = "HalfCheetah", .frame_skip = 5, .nq = 9, .nv = 9, .nu = 6,
                     .obs_dim = 17},
                    xml_path) {}

  void observe(const mjData* d, double* obs) const override {
    const mjModel* m = model();
    for (int i = 1; i < m->nq; ++i) *obs++ = d->qpos[i];
    for (int i = 0; i < m->nv; ++i) *obs++ = d->qvel[i];
  }

  // Gymnasium reads the root slider joint: qpos[0].
  void position(const mjData* d, double* xy) const override {
    xy[0] = d->qpos[0];
    xy[1] = 0.0;
  }
};

}  // namespace

std::unique_ptr<MujocoRobot> make_half_cheetah(const std::string& xml_path) {
  return std::make_unique<HalfCheetah>(xml_path);
}

}  // namespace bmaml
