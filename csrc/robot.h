// The robot interface: physics state, observation and motion of one simulated robot.
//
// A Robot is the shared, read-only description (model, dimensions, action bounds). Each
// environment owns a RobotSim made from it, which keeps only that environment's compact state;
// each thread owns a Workspace (MuJoCo: one mjData) in which a RobotSim is simulated. Keeping
// the large per-simulation scratch memory per thread rather than per environment keeps the
// working set in cache (as MuJoCo's own batch engine does). Rewards are not computed here: they
// belong to the objective (objective.h), which only sees the Motion a control step produced.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "physics.h"
#include "rng.h"

namespace bmaml {

// What one control step did, as the objectives need it.
struct Motion {
  double x_velocity = 0.0;  // forward velocity over the control step (m/s)
  double y_velocity = 0.0;
  double x_position = 0.0;  // position after the step
  double y_position = 0.0;
  double contact_cost = 0.0;  // sum of squared clipped contact forces; 0 for robots without
  bool healthy = true;        // inside the robot's healthy range (always true if it has none)
};

// Why a step could not be trusted; kNone for a normal step.
enum class Instability : int {
  kNone = 0,
  kBadQpos = 1,         // MuJoCo: NaN, Inf or huge value in qpos (it reset the data)
  kBadQvel = 2,         // MuJoCo: ... in qvel
  kBadQacc = 3,         // MuJoCo: ... in qacc (solver divergence)
  kNonFiniteObs = 4,    // the observation was not finite
  kSimulatorError = 5,  // MuJoCo raised an error
};

const char* instability_name(Instability why);

struct RobotSpec {
  std::string name;
  int obs_dim = 0;
  int act_dim = 0;
  int nq = 0;  // size of the qpos accepted by set_state
  int nv = 0;  // size of the qvel accepted by set_state
  double dt = 0.0;  // control timestep (s): physics timestep x frame skip
  int frame_skip = 1;
  bool has_health = false;  // terminates when unhealthy (Ant, Hopper, Walker2d)
  double ctrl_cost_weight = 0.05;  // reward_ctrl = -ctrl_cost_weight |a|^2 (the robot's action)
  double survive_reward = 0.0;     // reward_survive while healthy (robots with a healthy range)
  std::vector<double> action_low, action_high;
};

// Scratch memory of one thread, reused by every environment that thread simulates.
class Workspace {
 public:
  virtual ~Workspace() = default;
};

// One environment's robot. Every call writes the observation [obs_dim] it leads to, and may use
// (and overwrite) the calling thread's workspace.
class RobotSim {
 public:
  virtual ~RobotSim() = default;
  // Back to the initial state plus the robot's reset noise, drawn from rng.
  virtual void reset(Rng& rng, Workspace& ws, double* obs) = 0;
  // Set generalised positions [nq] and velocities [nv].
  virtual void set_state(const double* qpos, const double* qvel, Workspace& ws, double* obs) = 0;
  // Apply an action [act_dim] (already clipped to the bounds) for one control step. After an
  // instability the state is undefined (the caller resets) and obs is not written.
  virtual Instability step(const double* action, Workspace& ws, Motion* motion, double* obs) = 0;
  // Current state into qpos [nq] and qvel [nv].
  virtual void get_state(Workspace& ws, double* qpos, double* qvel) const = 0;
};

class Robot {
 public:
  virtual ~Robot() = default;
  const RobotSpec& spec() const { return spec_; }
  virtual std::unique_ptr<RobotSim> make_sim() const = 0;
  virtual std::unique_ptr<Workspace> make_workspace() const { return std::make_unique<Workspace>(); }

  // The physics values [physics_columns().size()] a task row carries after the objective's
  // numbers (physics.h); empty for robots whose tasks only change the reward.
  const std::vector<PhysicsColumn>& physics_columns() const { return physics_columns_; }
  // Make env's physics values the ones ws simulates with, before any call for that env.
  virtual void load_physics(Workspace&, const double* /*values*/) const {}

 protected:
  RobotSpec spec_;
  std::vector<PhysicsColumn> physics_columns_;
};

// Factory: name is one of "HalfCheetah", "Ant", "Swimmer", "Hopper", "Walker2d" (which need the
// path to Gymnasium's v5 MJCF asset) or "Navigation2D" (no asset); physics names the model
// fields each env's task sets (physics.h; none for Navigation2D). Throws std::invalid_argument on
// a bad name or field, a model that fails to load, or a model whose sizes do not match the robot.
std::shared_ptr<const Robot> make_robot(const std::string& name, const std::string& xml_path,
                                        const std::vector<std::string>& physics = {});

}  // namespace bmaml
