// What the MuJoCo robots share: loading Gymnasium's v5 asset, reset noise, stepping with a frame
// skip, and catching instabilities. Each robot (robots/*.cc) only says how it is observed, where
// it is, and whether it is healthy.
//
// Every MuJoCo call mirrors Gymnasium's MujocoEnv exactly (mj_resetData, then set the state and
// mj_forward on reset; ctrl, frame_skip x mj_step, then mj_rnePostConstraint where contact
// forces are observed), so that the same state and action give bit-identical physics.
#pragma once

#include <mujoco/mujoco.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "physics.h"
#include "robot.h"

namespace bmaml {

class MujocoRobot : public Robot {
 public:
  struct Options {
    std::string name;
    int frame_skip = 5;
    int nq = 0, nv = 0, nu = 0;  // sizes the asset must have
    int obs_dim = 0;
    bool has_health = false;
    double ctrl_cost_weight = 0.05;     // MAML reference code: 0.05; its Ant 0.5e-2
    double survive_reward = 0.0;        // Ant: 0.05 (MAML reference code); Hopper, Walker2d: 1
    bool needs_contact_forces = false;  // run mj_rnePostConstraint after each control step
    bool uniform_qvel_noise = false;    // Swimmer: qvel noise uniform; others: scaled normal
    double reset_noise_scale = 0.1;
  };

  MujocoRobot(const Options& options, const std::string& xml_path);
  ~MujocoRobot() override;

  // The base model (the asset's values). Envs are simulated with their workspace's model, a
  // copy with the env's physics values when the layout is not empty.
  const mjModel* model() const { return model_; }
  const Options& options() const { return options_; }
  // The fields each env's task sets (physics.h); called once, before the robot is shared.
  void set_physics(const std::vector<std::string>& fields);
  std::unique_ptr<RobotSim> make_sim() const override;
  std::unique_ptr<Workspace> make_workspace() const override;
  void load_physics(Workspace& ws, const double* values) const override;

  // Observation [obs_dim] of d.
  virtual void observe(const mjData* d, double* obs) const = 0;
  // Planar position used for velocity and goals, as Gymnasium reads it.
  virtual void position(const mjData* d, double* xy) const = 0;
  virtual bool healthy(const mjData*) const { return true; }
  // Sum of squared clipped external contact forces (Ant); 0 by default.
  virtual double contact_cost(const mjData*) const { return 0.0; }

 private:
  Options options_;
  mjModel* model_ = nullptr;
  std::optional<PhysicsLayout> physics_;  // set (and non-empty) only for families that vary it
};

// Routes MuJoCo warnings raised while an environment steps to that environment instead of the
// terminal and MUJOCO_LOG.TXT, and turns MuJoCo errors raised while it steps (e.g. an arena too
// small for the contacts) into an instability of that environment instead of exit(). Installed
// once, each only if nobody else installed a handler.
void install_mujoco_handlers();

// While alive, MuJoCo warnings raised on this thread are appended to *sink.
class WarningCapture {
 public:
  explicit WarningCapture(std::string* sink);
  ~WarningCapture();

 private:
  std::string* previous_;
};

}  // namespace bmaml
