// Navigation2D: a point robot in the plane (Finn et al. 2017), no physics engine.
// State = position; action = displacement, clipped to [-0.1, 0.1]^2; starts at the origin.
#include <cmath>

#include "../robot.h"
#include "robots.h"

namespace bmaml {
namespace {

constexpr double kMaxStep = 0.1;

class PointSim : public RobotSim {
 public:
  void reset(Rng&, Workspace&, double* obs) override {
    x_ = y_ = 0.0;
    observe(obs);
  }
  void set_state(const double* qpos, const double*, Workspace&, double* obs) override {
    x_ = qpos[0];
    y_ = qpos[1];
    observe(obs);
  }
  Instability step(const double* action, Workspace&, Motion* motion, double* obs) override {
    x_ += action[0];
    y_ += action[1];
    motion->x_velocity = action[0];  // dt = 1
    motion->y_velocity = action[1];
    motion->x_position = x_;
    motion->y_position = y_;
    observe(obs);
    return Instability::kNone;
  }
  void get_state(Workspace&, double* qpos, double*) const override {
    qpos[0] = x_;
    qpos[1] = y_;
  }

 private:
  void observe(double* obs) const {
    obs[0] = x_;
    obs[1] = y_;
  }
  double x_ = 0.0, y_ = 0.0;
};

class Navigation2D : public Robot {
 public:
  Navigation2D() {
    spec_.name = "Navigation2D";
    spec_.obs_dim = spec_.act_dim = spec_.nq = 2;
    spec_.nv = 0;
    spec_.dt = 1.0;
    spec_.action_low = {-kMaxStep, -kMaxStep};
    spec_.action_high = {kMaxStep, kMaxStep};
  }
  std::unique_ptr<RobotSim> make_sim() const override { return std::make_unique<PointSim>(); }
};

}  // namespace

std::shared_ptr<const Robot> make_navigation2d() { return std::make_shared<Navigation2D>(); }

}  // namespace bmaml
