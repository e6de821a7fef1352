#include "mujoco_robot.h"

#include <csetjmp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <stdexcept>

namespace bmaml {

namespace {

thread_local std::string* warning_sink = nullptr;

// Where a MuJoCo error raised on this thread jumps to (set only around a simulation step and
// around making a workspace's mjData), and its message. longjmp only crosses MuJoCo's C frames: the
// target is in the function that set it (MujocoSim::step, make_data_or_null).
thread_local std::jmp_buf* error_target = nullptr;
thread_local char error_message[512];

[[noreturn]] void error_handler(const char* message) {
  if (error_target) {
    std::snprintf(error_message, sizeof(error_message), "%s", message);
    std::longjmp(*error_target, 1);
  }
  std::fprintf(stderr, "MuJoCo error: %s\n", message);  // MuJoCo's default: report and exit
  std::exit(EXIT_FAILURE);
}

void warning_handler(const char* message) {
  if (warning_sink) {
    if (!warning_sink->empty()) warning_sink->append("; ");
    warning_sink->append(message);
  } else {
    std::fprintf(stderr, "MuJoCo warning: %s\n", message);
  }
}

// make(), or nullptr if MuJoCo raised an error (out of memory, e.g. under ulimit -v): its
// handler would otherwise exit() the process. What it had allocated before the error is lost.
template <typename T, typename Make>
T* or_null(Make make) {
  error_message[0] = '\0';
  std::jmp_buf target;
  if (setjmp(target) != 0) {
    error_target = nullptr;
    return nullptr;
  }
  error_target = &target;
  T* made = make();
  error_target = nullptr;
  return made;
}

[[noreturn]] void allocation_failed(const char* what) {
  throw std::runtime_error(std::string(what) + " failed: " +
                           (error_message[0] ? error_message : "out of memory"));
}

// A thread's mjData, in which the environments that thread steps are simulated in turn, and,
// for families that vary the physics, the thread's copy of the model into which each env's
// values are written before it is simulated (as MuJoCo's own batch engine expands fields).
struct MujocoWorkspace : Workspace {
  MujocoWorkspace(const mjModel* base, bool own_model) {
    if (own_model) {
      own = or_null<mjModel>([&] { return mj_copyModel(nullptr, base); });
      if (!own) allocation_failed("mj_copyModel");
    }
    m = own ? own : base;
    d = or_null<mjData>([&] { return mj_makeData(base); });
    if (!d) {
      if (own) mj_deleteModel(own);
      allocation_failed("mj_makeData");
    }
  }
  ~MujocoWorkspace() override {
    mj_deleteData(d);
    if (own) mj_deleteModel(own);
  }
  mjModel* own = nullptr;   // null when every env has the base model's physics
  const mjModel* m;         // what the envs are simulated with
  mjData* d;
};

constexpr int kStateSig = mjSTATE_INTEGRATION;  // everything the next step depends on

// One environment: its integration state row (mj_getState) and the robot's position after its
// last step or reset, which is the "before" of the next step's velocity (for Ant that is a body
// frame position, derived data that the state row does not hold).
class MujocoSim : public RobotSim {
 public:
  explicit MujocoSim(const MujocoRobot& robot)
      : robot_(robot), state_(mj_stateSize(robot.model(), kStateSig)) {}

  void reset(Rng& rng, Workspace& ws, double* obs) override {
    auto [m, d] = simulation(ws);
    const MujocoRobot::Options& o = robot_.options();
    const double s = o.reset_noise_scale;
    mj_resetData(m, d);
    for (int i = 0; i < m->nq; ++i) d->qpos[i] = m->qpos0[i] + rng.uniform(-s, s);
    for (int i = 0; i < m->nv; ++i)
      d->qvel[i] = o.uniform_qvel_noise ? rng.uniform(-s, s) : s * rng.normal();
    mj_forward(m, d);
    finish(m, d, obs);
  }

  void set_state(const double* qpos, const double* qvel, Workspace& ws, double* obs) override {
    auto [m, d] = simulation(ws);
    mj_resetData(m, d);
    for (int i = 0; i < m->nq; ++i) d->qpos[i] = qpos[i];
    for (int i = 0; i < m->nv; ++i) d->qvel[i] = qvel[i];
    mj_forward(m, d);
    finish(m, d, obs);
  }

  Instability step(const double* action, Workspace& ws, Motion* motion, double* obs) override {
    auto [m, d] = simulation(ws);
    const MujocoRobot::Options& o = robot_.options();
    mj_setState(m, d, state_.data(), kStateSig);
    for (int i = 0; i < m->nu; ++i) d->ctrl[i] = action[i];
    // Fresh counters: the workspace served other environments, and MuJoCo reports a warning's
    // message only on its first occurrence.
    std::memset(d->warning, 0, sizeof(d->warning));
    if (!step_physics(m, d, o.frame_skip)) {
      mj_resetData(m, d);  // the workspace is in an unknown state after an error
      throw std::runtime_error(std::string("MuJoCo error: ") + error_message);
    }
    // mj_step resets the data and counts a warning when the state blows up.
    for (int w = 0; w < 3; ++w) {
      if (d->warning[mjWARN_BADQPOS + w].number)
        return static_cast<Instability>(static_cast<int>(Instability::kBadQpos) + w);
    }
    if (o.needs_contact_forces) mj_rnePostConstraint(m, d);
    double after[2];
    robot_.position(d, after);
    const double dt = robot_.spec().dt;
    motion->x_velocity = (after[0] - xy_[0]) / dt;
    motion->y_velocity = (after[1] - xy_[1]) / dt;
    motion->x_position = after[0];
    motion->y_position = after[1];
    motion->healthy = robot_.healthy(d);
    motion->contact_cost = robot_.contact_cost(d);
    finish(m, d, obs);
    return Instability::kNone;
  }

  void get_state(Workspace& ws, double* qpos, double* qvel) const override {
    auto [m, d] = simulation(ws);
    mj_setState(m, d, state_.data(), kStateSig);
    for (int i = 0; i < m->nq; ++i) qpos[i] = d->qpos[i];
    for (int i = 0; i < m->nv; ++i) qvel[i] = d->qvel[i];
  }

 private:
  struct Simulation {
    const mjModel* m;
    mjData* d;
  };
  static Simulation simulation(Workspace& ws) {
    auto& w = static_cast<MujocoWorkspace&>(ws);
    return {w.m, w.d};
  }

  // After a reset or a step: observe, remember the position, save the state row.
  void finish(const mjModel* m, mjData* d, double* obs) {
    robot_.observe(d, obs);
    robot_.position(d, xy_);
    mj_getState(m, d, state_.data(), kStateSig);
  }

  // frame_skip x mj_step; false if MuJoCo raised an error (message in error_message). The
  // longjmp from the error handler lands here, crossing only MuJoCo's C frames.
  bool step_physics(const mjModel* m, mjData* d, int frame_skip) {
    std::jmp_buf target;
    if (setjmp(target) != 0) {
      error_target = nullptr;
      return false;
    }
    error_target = &target;
    for (int k = 0; k < frame_skip; ++k) mj_step(m, d);
    error_target = nullptr;
    return true;
  }

  const MujocoRobot& robot_;
  std::vector<mjtNum> state_;
  double xy_[2] = {0.0, 0.0};
};

}  // namespace

void install_mujoco_handlers() {
  if (!mju_user_warning) mju_user_warning = warning_handler;
  if (!mju_user_error) mju_user_error = error_handler;
}

WarningCapture::WarningCapture(std::string* sink) : previous_(warning_sink) { warning_sink = sink; }
WarningCapture::~WarningCapture() { warning_sink = previous_; }

MujocoRobot::MujocoRobot(const Options& options, const std::string& xml_path) : options_(options) {
  char error[1024] = "";
  std::string load_warnings;  // deprecation notes of the shipped assets: not the user's concern
  {
    WarningCapture capture(&load_warnings);
    model_ = mj_loadXML(xml_path.c_str(), nullptr, error, sizeof(error));
  }
  if (!model_) {
    throw std::invalid_argument("xml_path: could not load MuJoCo model '" + xml_path +
                                "': " + error);
  }
  const mjModel* m = model_;
  if (m->nq != options.nq || m->nv != options.nv || m->nu != options.nu) {
    const std::string got = "nq=" + std::to_string(m->nq) + ", nv=" + std::to_string(m->nv) +
                            ", nu=" + std::to_string(m->nu);
    const std::string expected = "nq=" + std::to_string(options.nq) +
                                 ", nv=" + std::to_string(options.nv) +
                                 ", nu=" + std::to_string(options.nu);
    mj_deleteModel(model_);
    model_ = nullptr;
    throw std::invalid_argument("xml_path: '" + xml_path + "' is not a " + options.name +
                                " model: expected " + expected + ", got " + got);
  }
  spec_.name = options.name;
  spec_.obs_dim = options.obs_dim;
  spec_.act_dim = m->nu;
  spec_.nq = m->nq;
  spec_.nv = m->nv;
  spec_.frame_skip = options.frame_skip;
  spec_.dt = m->opt.timestep * options.frame_skip;
  spec_.has_health = options.has_health;
  spec_.ctrl_cost_weight = options.ctrl_cost_weight;
  spec_.survive_reward = options.survive_reward;
  for (int i = 0; i < m->nu; ++i) {
    const bool limited = m->actuator_ctrllimited[i];
    spec_.action_low.push_back(limited ? m->actuator_ctrlrange[2 * i] : -INFINITY);
    spec_.action_high.push_back(limited ? m->actuator_ctrlrange[2 * i + 1] : INFINITY);
  }
}

MujocoRobot::~MujocoRobot() {
  if (model_) mj_deleteModel(model_);
}

std::unique_ptr<RobotSim> MujocoRobot::make_sim() const {
  return std::make_unique<MujocoSim>(*this);
}

void MujocoRobot::set_physics(const std::vector<std::string>& fields) {
  if (fields.empty()) return;
  physics_.emplace(fields, model_);
  physics_columns_ = physics_->columns();
}

std::unique_ptr<Workspace> MujocoRobot::make_workspace() const {
  return std::make_unique<MujocoWorkspace>(model_, physics_.has_value());
}

void MujocoRobot::load_physics(Workspace& ws, const double* values) const {
  if (physics_) physics_->write(static_cast<MujocoWorkspace&>(ws).own, values);
}

}  // namespace bmaml
