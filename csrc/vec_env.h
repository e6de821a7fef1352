// The batched environment: num_envs robots of one kind, each with its own task, stepped in
// lockstep on a thread pool. Observations, rewards, terminations, time limits and resets are
// all computed here; the caller touches each batch once per step.
//
// No pointer is checked here: the bindings validate every argument before calling in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "objective.h"
#include "robot.h"
#include "thread_pool.h"

namespace bmaml {

// Output rows of one step; all row-major, owned by the caller, num_envs rows each.
struct StepBuffers {
  double* obs;           // [N, obs_dim] observation after the step (after the reset if done)
  double* reward;        // [N]
  uint8_t* terminated;   // [N]
  uint8_t* truncated;    // [N] time limit reached, or the env became unstable
  double* x_velocity;    // [N]
  double* reward_terms;  // [N, kNumRewardTerms]: task, ctrl, contact, survive
  double* final_obs;     // [N, obs_dim] last observation of an episode that ended; else untouched
  int32_t* instability;  // [N] Instability code, 0 for a normal step
};

// The most threads one env may use. Results never depend on the thread count and more threads
// than cores only add switching, so a larger request is a mistake (a thread per env, say) that
// would otherwise exhaust the process's thread limit. The bindings refuse it.
constexpr int kMaxThreads = 256;

class VecEnv {
 public:
  // num_threads in [1, kMaxThreads]; min(num_threads, num_envs) threads run (the caller's
  // included). Throws ThreadStartError if the OS refuses a thread (none is left running).
  VecEnv(std::shared_ptr<const Robot> robot, Objective objective, int num_envs, int num_threads,
         int max_episode_steps, uint64_t seed);

  const RobotSpec& spec() const { return robot_->spec(); }
  const Robot& robot() const { return *robot_; }
  int num_envs() const { return num_envs_; }
  int num_threads() const { return pool_.num_threads(); }
  int max_episode_steps() const { return max_episode_steps_; }
  // Numbers per task row: the objective's kTaskParams, then the robot's physics columns.
  int task_width() const { return task_width_; }

  // tasks [N, task_width()], checked by the caller (physics columns >= 0, > 0 where the column
  // says so); the objective part takes effect from the next step, the physics part from the next
  // call that simulates the env (a step, reset or set_state).
  void set_tasks(const double* tasks);
  // Reset every env; reseed each env's stream from (seed, env index) first if seed is given.
  void reset(const uint64_t* seed, double* obs);
  // Reset every env after reseeding env i's stream from (seeds[i], streams[i]): env i then starts
  // as env streams[i] of an env reset with seeds[i] (e.g. per-task seeds in one batch).
  void reset_streams(const uint64_t* seeds, const uint64_t* streams, double* obs);
  // actions [N, act_dim], finite. Episodes that end are reset in the same step (Gymnasium's
  // SAME_STEP autoreset): obs holds the new episode's first observation, final_obs the last one.
  //
  // hold [N] (0/1) or null: env i with hold[i] set is not stepped. Its action row is never read
  // (it may hold anything, NaN included); its outputs are its current observation (the first
  // one of its episode if the last step reset it), reward, reward terms and x_velocity 0,
  // terminated, truncated and instability 0, final_obs untouched; its step count, state, reset
  // noise stream and warning() are unchanged. (Gymnasium's NEXT_STEP autoreset: the step after
  // an episode ended returns the new episode's first observation and ignores the action.)
  void step(const double* actions, const uint8_t* hold, const StepBuffers& out);
  // qpos [N, nq], qvel [N, nv] -> obs [N, obs_dim]; starts a new episode in every env.
  void set_state(const double* qpos, const double* qvel, double* obs);
  void get_state(double* qpos, double* qvel);
  // MuJoCo's own message for env i's last instability ("" if none).
  const std::string& warning(int i) const { return warnings_[i]; }

 private:
  void reset_env(std::ptrdiff_t i, Workspace& ws, double* obs_row);
  void step_env(std::ptrdiff_t i, Workspace& ws, const double* action, const StepBuffers& out);
  void hold_env(std::ptrdiff_t i, const StepBuffers& out);
  std::ptrdiff_t chunk() const;
  // Thread w's workspace, holding env i's physics.
  Workspace& workspace(std::ptrdiff_t i, int w);

  std::shared_ptr<const Robot> robot_;
  Objective objective_;
  int num_envs_;
  int max_episode_steps_;
  int task_width_;
  bool has_physics_;
  ThreadPool pool_;
  std::vector<std::unique_ptr<Workspace>> workspaces_;  // one per pool thread
  std::vector<std::unique_ptr<RobotSim>> sims_;
  std::vector<Rng> rngs_;
  std::vector<double> tasks_;     // [N, task_width_]
  std::vector<int> steps_;        // steps taken in the current episode
  std::vector<double> last_obs_;  // [N, obs_dim] last finite observation
  std::vector<std::string> warnings_;
};

}  // namespace bmaml
