// Python bindings: the only file that sees pybind11. Every argument is converted and checked
// here (errors name the argument, what was expected and what came), then the GIL is released
// and the unchecked core runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "gae.h"
#include "mujoco_robot.h"
#include "objective.h"
#include "robot.h"
#include "vec_env.h"

namespace py = pybind11;

namespace bmaml {
namespace {

using DoubleArray = py::array_t<double, py::array::c_style>;
using ByteArray = py::array_t<uint8_t, py::array::c_style>;

std::string shape_str(const std::vector<py::ssize_t>& shape) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) s << ",";
  s << ")";
  return s.str();
}

std::string shape_of(const py::array& a) {
  return shape_str(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
}

std::string dtype_of(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

py::array as_array(py::handle obj, const char* name) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::type_error(std::string(name) + ": expected an array, got " +
                               py::str(py::type::of(obj)).cast<std::string>());
  return a;
}

void check_shape(const py::array& a, const char* name, const std::vector<py::ssize_t>& shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape[i];
  if (!ok) {
    throw py::value_error(std::string(name) + ": expected shape " + shape_str(shape) +
                          ", got " + shape_of(a));
  }
}

// A MemoryError raised by numpy, again, with what was being done (naming the argument) first.
// Anything else is rethrown as it is, or as a TypeError with the same words if other is set.
[[noreturn]] void rethrow_memory_error(py::error_already_set& e, const std::string& what,
                                       bool other = false) {
  const std::string message = what + " (" + e.what() + ")";
  if (e.matches(PyExc_MemoryError)) {
    py::set_error(PyExc_MemoryError, message.c_str());
    throw py::error_already_set();
  }
  if (other) throw py::type_error(message);
  throw;
}

// a as a contiguous array of T: a copy only if needed, and never an unchecked result. numpy
// refuses what it cannot cast safely (the callers check the dtype first, so that is only out of
// memory, e.g. a copy of a huge broadcast view): the error then names the argument.
template <typename T>
py::array_t<T, py::array::c_style> contiguous(const py::array& a, const char* name) {
  try {
    return py::array_t<T, py::array::c_style>(a);  // raises where ensure() would return null
  } catch (py::error_already_set& e) {
    const std::string what = std::string(name) + ": cannot convert the " + dtype_of(a) +
                             " array of shape " + shape_of(a) + " to contiguous " +
                             py::str(py::dtype::of<T>()).cast<std::string>();
    rethrow_memory_error(e, what, /*other=*/true);
  }
}

[[noreturn]] void throw_not_finite(const char* name, const std::string& value, py::ssize_t k,
                                   py::ssize_t row_size) {
  std::ostringstream s;
  s << name << ": expected finite values, got " << value << " in row " << k / row_size
    << " (column " << k % row_size << ")";
  throw py::value_error(s.str());
}

template <typename Real>
std::string text(Real x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

// Finite everywhere (but in the rows where skip_rows, if given, is set), or a ValueError naming
// the first bad row (an env) and value.
void check_finite(const DoubleArray& a, const char* name, py::ssize_t row_size,
                  const uint8_t* skip_rows) {
  const double* p = a.data();
  for (py::ssize_t k = 0; k < a.size(); ++k) {
    if (!std::isfinite(p[k]) && !(skip_rows && skip_rows[k / row_size])) {
      throw_not_finite(name, text(p[k]), k, row_size);
    }
  }
}

// A real floating array of the given shape with finite values, as contiguous float64 (a copy
// only if needed). float16, float32 and float64 convert exactly. Wider floats (numpy's
// longdouble: float128 on x86-64 Linux) are narrowed here, value by value: numpy will not cast
// them to float64 implicitly, and a value beyond float64's range must be an error, not inf.
// skip_rows [shape[0]] (0/1) or null: rows that are not used (a held env's action), whose values
// are not checked (any value, NaN included; narrowed ones become 0).
DoubleArray finite_float64_arg(py::handle obj, const char* name,
                               const std::vector<py::ssize_t>& shape,
                               const uint8_t* skip_rows = nullptr) {
  py::array a = as_array(obj, name);
  if (a.dtype().kind() != 'f') {
    throw py::type_error(std::string(name) + ": expected a floating-point array, got dtype " +
                         dtype_of(a));
  }
  check_shape(a, name, shape);
  const py::ssize_t row_size = shape.size() >= 2 ? std::max<py::ssize_t>(1, shape.back()) : 1;
  if (a.dtype().itemsize() <= static_cast<py::ssize_t>(sizeof(double))) {
    DoubleArray d = contiguous<double>(a, name);
    check_finite(d, name, row_size, skip_rows);
    return d;
  }
  if (a.dtype().itemsize() != static_cast<py::ssize_t>(sizeof(long double))) {
    throw py::type_error(std::string(name) + ": expected float16, float32, float64 or " +
                         py::str(py::dtype::of<long double>()).cast<std::string>() +
                         ", got dtype " + dtype_of(a));
  }
  auto wide = contiguous<long double>(a, name);  // byte order and layout only: no narrowing
  DoubleArray d(shape);
  const long double* p = wide.data();
  double* q = d.mutable_data();
  for (py::ssize_t k = 0; k < wide.size(); ++k) {
    if (skip_rows && skip_rows[k / row_size]) {
      q[k] = 0.0;  // never read; and a value beyond float64's range must not be cast
      continue;
    }
    if (!std::isfinite(p[k])) throw_not_finite(name, text(p[k]), k, row_size);
    if (std::fabs(p[k]) > static_cast<long double>(std::numeric_limits<double>::max())) {
      std::ostringstream s;
      s << name << ": expected values within float64's range, got " << p[k] << " in row "
        << k / row_size << " (column " << k % row_size << ")";
      throw py::value_error(s.str());
    }
    q[k] = static_cast<double>(p[k]);
  }
  return d;
}

// A uint64 array of exactly this shape (no silent casts: a seed must not wrap around).
py::array_t<uint64_t, py::array::c_style> uint64_arg(py::handle obj, const char* name,
                                                     const std::vector<py::ssize_t>& shape) {
  py::array a = as_array(obj, name);
  if (!a.dtype().equal(py::dtype::of<uint64_t>())) {
    throw py::type_error(std::string(name) + ": expected a uint64 array, got dtype " + dtype_of(a));
  }
  check_shape(a, name, shape);
  return contiguous<uint64_t>(a, name);
}

// step()'s hold: None, or a bool array [n] (no integers: an index list such as [0, 2] must not
// pass for a mask), as contiguous 0/1 bytes (a copy only if needed). ValueError otherwise.
std::optional<ByteArray> hold_arg(py::handle obj, py::ssize_t n) {
  if (obj.is_none()) return std::nullopt;
  py::array a = py::array::ensure(obj);
  if (!a) {
    throw py::value_error("hold: expected None or a bool array of shape " + shape_str({n}) +
                          ", got " + py::str(py::type::of(obj)).cast<std::string>());
  }
  if (a.dtype().kind() != 'b') {
    throw py::value_error("hold: expected None or a bool array of shape " + shape_str({n}) +
                          ", got dtype " + dtype_of(a));
  }
  check_shape(a, "hold", {n});
  try {
    return ByteArray(a.attr("view")("uint8"));
  } catch (py::error_already_set& e) {
    rethrow_memory_error(e, "hold: cannot convert the bool array of shape " + shape_of(a) +
                                " to contiguous bool", /*other=*/true);
  }
}

int positive_int(long long value, const char* name) {
  if (value < 1 || value > (1LL << 30)) {
    throw py::value_error(std::string(name) + ": expected an integer in [1, 2**30], got " +
                          std::to_string(value));
  }
  return static_cast<int>(value);
}

// The thread-count rule, the same words in every error that concerns it.
std::string thread_rule() {
  return "at most " + std::to_string(kMaxThreads) +
         " threads, and at most num_envs of them are started; results do not depend on num_threads";
}

int thread_count(long long value) {
  if (value < 1 || value > kMaxThreads) {
    throw py::value_error("num_threads: expected an integer in [1, " + std::to_string(kMaxThreads) +
                          "] (" + thread_rule() + "), got " + std::to_string(value));
  }
  return static_cast<int>(value);
}

// The checked layer over VecEnv, holding what Python needs to know about shapes.
//
// Python threads may share one env: every call into the core holds mutex_, taken only after the
// GIL is released (so a thread waiting for it never blocks the interpreter), because the core and
// MuJoCo's data are not reentrant (a concurrent step would corrupt them and abort the process).
class PyVecEnv {
 public:
  PyVecEnv(const std::string& robot, const std::string& objective, const std::string& xml_path,
           long long num_envs, long long num_threads, long long max_episode_steps,
           unsigned long long seed, const std::vector<std::string>& physics) {
    const int n = positive_int(num_envs, "num_envs");
    const int threads = thread_count(num_threads);
    const int steps = positive_int(max_episode_steps, "max_episode_steps");
    Objective obj;
    try {
      obj.kind = objective_kind_from_name(objective);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
    std::shared_ptr<const Robot> r;
    try {
      r = make_robot(robot, xml_path, physics);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
    if (r->spec().act_dim > 64) throw py::value_error("robot: more than 64 actuators is not supported");
    std::optional<ThreadStartError> refused;
    {
      py::gil_scoped_release release;
      try {
        env_ = std::make_unique<VecEnv>(std::move(r), obj, n, threads, steps, seed);
      } catch (const ThreadStartError& e) {
        refused = e;  // the pool joined its started workers: nothing is left running
      }
    }
    if (refused) {
      throw std::runtime_error(
          "num_threads: " + std::string(refused->what()) + "; the process's thread or memory " +
          "limit (ulimit -u, ulimit -v) is too low for " + std::to_string(refused->requested) +
          " threads (the " + std::to_string(refused->started - 1) +
          " workers started were stopped and joined). Use fewer threads (" + thread_rule() + ")");
    }
  }

  const RobotSpec& spec() const { return env_->spec(); }
  py::ssize_t n() const { return env_->num_envs(); }

  void set_tasks(py::handle tasks) {
    const py::ssize_t width = env_->task_width();
    DoubleArray t = finite_float64_arg(tasks, "tasks", {n(), width});
    // Physics columns: a negative damping or a zero mass would not fail, it would simulate
    // nonsense (or divide by zero) without a word.
    const auto& columns = env_->robot().physics_columns();
    const double* v = t.data();
    for (py::ssize_t i = 0; i < n(); ++i) {
      for (size_t c = 0; c < columns.size(); ++c) {
        const double x = v[i * width + kTaskParams + c];
        if (x < 0.0 || (columns[c].positive && x == 0.0)) {
          std::ostringstream msg;
          msg << "tasks: column " << kTaskParams + c << " (" << columns[c].label << ") expected "
              << (columns[c].positive ? "> 0" : ">= 0") << ", got " << x << " in row " << i;
          throw py::value_error(msg.str());
        }
      }
    }
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    env_->set_tasks(t.data());
  }

  DoubleArray reset(std::optional<unsigned long long> seed) {
    DoubleArray obs({n(), static_cast<py::ssize_t>(spec().obs_dim)});
    double* out = obs.mutable_data();
    uint64_t s = seed.value_or(0);
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      env_->reset(seed ? &s : nullptr, out);
    }
    return obs;
  }

  DoubleArray reset_streams(py::handle seeds, py::handle streams) {
    auto s = uint64_arg(seeds, "seeds", {n()});
    auto k = uint64_arg(streams, "streams", {n()});
    DoubleArray obs({n(), static_cast<py::ssize_t>(spec().obs_dim)});
    double* out = obs.mutable_data();
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      env_->reset_streams(s.data(), k.data(), out);
    }
    return obs;
  }

  // hold: None (every env steps) or bool [N]: see VecEnv::step. A held env's action row is not
  // checked (Gymnasium ignores it: it may be anything, NaN included).
  py::tuple step(py::handle actions, py::handle hold_obj) {
    const std::optional<ByteArray> hold = hold_arg(hold_obj, n());
    const uint8_t* held = hold ? hold->data() : nullptr;
    DoubleArray a = finite_float64_arg(actions, "actions", {n(), spec().act_dim}, held);
    const py::ssize_t obs_dim = spec().obs_dim;
    DoubleArray obs({n(), obs_dim}), reward(n()), x_velocity(n());
    DoubleArray terms({n(), static_cast<py::ssize_t>(kNumRewardTerms)});
    DoubleArray final_obs({n(), obs_dim});
    py::array_t<bool> terminated(n()), truncated(n());
    py::array_t<int32_t> instability(n());
    StepBuffers out{obs.mutable_data(),
                    reward.mutable_data(),
                    reinterpret_cast<uint8_t*>(terminated.mutable_data()),
                    reinterpret_cast<uint8_t*>(truncated.mutable_data()),
                    x_velocity.mutable_data(),
                    terms.mutable_data(),
                    final_obs.mutable_data(),
                    instability.mutable_data()};
    std::fill(out.final_obs, out.final_obs + n() * obs_dim, NAN);  // NaN where no episode ended
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      env_->step(a.data(), held, out);
    }
    return py::make_tuple(obs, reward, terminated, truncated, x_velocity, terms, final_obs,
                          instability);
  }

  DoubleArray set_state(py::handle qpos, py::handle qvel) {
    DoubleArray p = finite_float64_arg(qpos, "qpos", {n(), spec().nq});
    DoubleArray v = finite_float64_arg(qvel, "qvel", {n(), spec().nv});
    DoubleArray obs({n(), static_cast<py::ssize_t>(spec().obs_dim)});
    double* out = obs.mutable_data();
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      env_->set_state(p.data(), v.data(), out);
    }
    return obs;
  }

  py::tuple get_state() {
    DoubleArray qpos({n(), static_cast<py::ssize_t>(spec().nq)});
    DoubleArray qvel({n(), static_cast<py::ssize_t>(spec().nv)});
    double* p = qpos.mutable_data();
    double* v = qvel.mutable_data();
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      env_->get_state(p, v);
    }
    return py::make_tuple(qpos, qvel);
  }

  std::string warning(long long i) {
    if (i < 0 || i >= n()) {
      throw py::index_error("env: expected an index in [0, " + std::to_string(n()) + "), got " +
                            std::to_string(i));
    }
    std::string message;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      message = env_->warning(static_cast<int>(i));
    }
    return message;
  }

  VecEnv& env() { return *env_; }

 private:
  std::unique_ptr<VecEnv> env_;
  std::mutex mutex_;  // one call into env_ at a time (see the class comment)
};

// The core's GAE takes 64-bit sizes: the [T, N] numpy allows are passed on unchanged (an int
// here once wrapped N >= 2**31 to a negative count, and the result was silently all zeros).
static_assert(std::is_same_v<decltype(&gae<float>),
                             void (*)(std::ptrdiff_t, std::ptrdiff_t, const float*, const float*,
                                      const uint8_t*, const uint8_t*, const float*, const float*,
                                      float, float, float*, float*)>);
static_assert(std::is_same_v<py::ssize_t, std::ptrdiff_t>);

struct GaeSizes {
  std::ptrdiff_t T, N;
};

// The sizes handed to the core for these rewards (a [T, N] array, checked by the caller).
GaeSizes gae_sizes(const py::array& rewards) { return {rewards.shape(0), rewards.shape(1)}; }

template <typename Real>
py::tuple gae_typed(const py::array& rewards, const py::array& values, const ByteArray& terminated,
                    const ByteArray& truncated, const py::object& final_values,
                    const py::array& last_values, double gamma, double lam) {
  using Arr = py::array_t<Real, py::array::c_style>;
  const GaeSizes size = gae_sizes(rewards);
  Arr r = contiguous<Real>(rewards, "rewards"), v = contiguous<Real>(values, "values");
  Arr last = contiguous<Real>(last_values, "last_values");
  Arr fin;
  if (!final_values.is_none()) fin = contiguous<Real>(final_values, "final_values");
  Arr adv, ret;
  try {
    adv = Arr({size.T, size.N});
    ret = Arr({size.T, size.N});
  } catch (py::error_already_set& e) {
    rethrow_memory_error(e, "rewards: cannot allocate the advantages and returns for shape " +
                                shape_of(rewards));
  }
  const Real* fin_ptr = final_values.is_none() ? nullptr : fin.data();
  {
    py::gil_scoped_release release;
    gae<Real>(size.T, size.N, r.data(), v.data(), terminated.data(), truncated.data(), fin_ptr,
              last.data(), static_cast<Real>(gamma), static_cast<Real>(lam), adv.mutable_data(),
              ret.mutable_data());
  }
  return py::make_tuple(adv, ret);
}

ByteArray flags_arg(py::handle obj, const char* name, const std::vector<py::ssize_t>& shape) {
  py::array a = as_array(obj, name);
  const char kind = a.dtype().kind();
  if (kind != 'b' && kind != 'i' && kind != 'u') {
    throw py::type_error(std::string(name) + ": expected a bool array, got dtype " + dtype_of(a));
  }
  check_shape(a, name, shape);
  // Normalise to contiguous 0/1 bytes whatever the integer width (a copy only if needed).
  try {
    return ByteArray(kind == 'b' ? a.attr("view")("uint8")
                                 : a.attr("astype")("bool").attr("view")("uint8"));
  } catch (py::error_already_set& e) {
    rethrow_memory_error(e, std::string(name) + ": cannot convert the " + dtype_of(a) +
                                " array of shape " + shape_of(a) + " to contiguous bool",
                         /*other=*/true);
  }
}

py::tuple gae_binding(py::handle rewards_obj, py::handle values_obj, py::handle terminated_obj,
                      py::handle truncated_obj, py::handle last_values_obj, double gamma,
                      double lam, py::handle final_values_obj) {
  py::array rewards = as_array(rewards_obj, "rewards");
  if (rewards.ndim() != 2) {
    throw py::value_error("rewards: expected a 2-d array [T, N], got shape " + shape_of(rewards));
  }
  const py::ssize_t T = rewards.shape(0), N = rewards.shape(1);
  if (T < 1 || N < 1) throw py::value_error("rewards: expected T >= 1 and N >= 1, got shape " + shape_of(rewards));
  const py::dtype dtype = rewards.dtype();
  const bool is_f32 = dtype.equal(py::dtype::of<float>());
  if (!is_f32 && !dtype.equal(py::dtype::of<double>())) {
    throw py::type_error("rewards: expected dtype float32 or float64, got " + dtype_of(rewards));
  }
  auto same_float = [&](py::handle obj, const char* name, const std::vector<py::ssize_t>& shape) {
    py::array a = as_array(obj, name);
    if (!a.dtype().equal(dtype)) {
      throw py::type_error(std::string(name) + ": expected dtype " + dtype_of(rewards) +
                           " (that of rewards), got " + dtype_of(a));
    }
    check_shape(a, name, shape);
    return a;
  };
  py::array values = same_float(values_obj, "values", {T, N});
  py::array last_values = same_float(last_values_obj, "last_values", {N});
  py::object final_values = py::none();
  if (!final_values_obj.is_none()) final_values = same_float(final_values_obj, "final_values", {T, N});
  ByteArray terminated = flags_arg(terminated_obj, "terminated", {T, N});
  ByteArray truncated = flags_arg(truncated_obj, "truncated", {T, N});
  if (!(gamma >= 0.0 && gamma <= 1.0)) {
    throw py::value_error("gamma: expected a value in [0, 1], got " + std::to_string(gamma));
  }
  if (!(lam >= 0.0 && lam <= 1.0)) {
    throw py::value_error("lam: expected a value in [0, 1], got " + std::to_string(lam));
  }
  if (final_values.is_none()) {
    const uint8_t* tr = truncated.data();
    for (py::ssize_t k = 0; k < (T - 1) * N; ++k) {
      if (tr[k]) {
        throw py::value_error(
            "final_values: required when an episode is truncated before the last step (t=" +
            std::to_string(k / N) + ", env " + std::to_string(k % N) +
            "): pass the values of the truncated episodes' final observations");
      }
    }
  }
  if (is_f32) return gae_typed<float>(rewards, values, terminated, truncated, final_values, last_values, gamma, lam);
  return gae_typed<double>(rewards, values, terminated, truncated, final_values, last_values, gamma, lam);
}

// `with _core.QuietWarnings():` MuJoCo warnings raised on this thread go to a string (`.messages`)
// instead of the terminal: for Python-side loads of the assets (their compile-time deprecation
// notes are not the user's concern, as in MujocoRobot's own load).
class QuietWarnings {
 public:
  QuietWarnings& enter() {
    capture_ = std::make_unique<WarningCapture>(&messages_);
    return *this;
  }
  void exit(py::args) { capture_.reset(); }
  const std::string& messages() const { return messages_; }

 private:
  std::string messages_;
  std::unique_ptr<WarningCapture> capture_;
};

}  // namespace
}  // namespace bmaml

PYBIND11_MODULE(_core, m) {
  using namespace bmaml;
  m.doc() = "bmaml_robot's C++ core: batched MuJoCo robots and GAE (use bmaml_robot's API).";
  install_mujoco_handlers();

  py::class_<PyVecEnv>(m, "VecEnvCore")
      .def(py::init<const std::string&, const std::string&, const std::string&, long long,
                    long long, long long, unsigned long long, const std::vector<std::string>&>(),
           py::arg("robot"), py::arg("objective"), py::arg("xml_path"), py::arg("num_envs"),
           py::arg("num_threads"), py::arg("max_episode_steps"), py::arg("seed"),
           py::arg("physics") = std::vector<std::string>())
      .def_property_readonly("robot", [](const PyVecEnv& e) { return e.spec().name; })
      .def_property_readonly("obs_dim", [](const PyVecEnv& e) { return e.spec().obs_dim; })
      .def_property_readonly("act_dim", [](const PyVecEnv& e) { return e.spec().act_dim; })
      .def_property_readonly("nq", [](const PyVecEnv& e) { return e.spec().nq; })
      .def_property_readonly("nv", [](const PyVecEnv& e) { return e.spec().nv; })
      .def_property_readonly("dt", [](const PyVecEnv& e) { return e.spec().dt; })
      .def_property_readonly("action_low", [](const PyVecEnv& e) { return e.spec().action_low; })
      .def_property_readonly("action_high", [](const PyVecEnv& e) { return e.spec().action_high; })
      .def_property_readonly("num_envs", [](const PyVecEnv& e) { return e.n(); })
      .def_property_readonly("num_threads", [](PyVecEnv& e) { return e.env().num_threads(); })
      .def_property_readonly("max_episode_steps", [](PyVecEnv& e) { return e.env().max_episode_steps(); })
      .def_property_readonly("task_width", [](PyVecEnv& e) { return e.env().task_width(); })
      .def_property_readonly("physics_columns", [](PyVecEnv& e) {
        py::list labels;
        for (const PhysicsColumn& c : e.env().robot().physics_columns()) labels.append(c.label);
        return py::tuple(labels);
      })
      .def_property_readonly("physics_defaults", [](PyVecEnv& e) {
        const auto& columns = e.env().robot().physics_columns();
        DoubleArray values(static_cast<py::ssize_t>(columns.size()));
        for (size_t c = 0; c < columns.size(); ++c) values.mutable_data()[c] = columns[c].default_value;
        return values;
      })
      .def("set_tasks", &PyVecEnv::set_tasks, py::arg("tasks"))
      .def("reset", &PyVecEnv::reset, py::arg("seed") = py::none())
      .def("reset_streams", &PyVecEnv::reset_streams, py::arg("seeds"), py::arg("streams"))
      .def("step", &PyVecEnv::step, py::arg("actions"), py::arg("hold") = py::none())
      .def("set_state", &PyVecEnv::set_state, py::arg("qpos"), py::arg("qvel"))
      .def("get_state", &PyVecEnv::get_state)
      .def("warning", &PyVecEnv::warning, py::arg("env"));

  py::class_<QuietWarnings>(m, "QuietWarnings")
      .def(py::init<>())
      .def("__enter__", &QuietWarnings::enter, py::return_value_policy::reference)
      .def("__exit__", &QuietWarnings::exit)
      .def_property_readonly("messages", &QuietWarnings::messages);

  m.def("gae", &gae_binding, py::arg("rewards"), py::arg("values"), py::arg("terminated"),
        py::arg("truncated"), py::arg("last_values"), py::arg("gamma"), py::arg("lam"),
        py::arg("final_values") = py::none());
  // Private: the sizes gae() hands the core for these rewards, to test the 64-bit size path on a
  // stride-0 view without allocating 2**31 elements.
  m.def("_gae_sizes", [](const py::array& rewards) {
    if (rewards.ndim() != 2) throw py::value_error("rewards: expected a 2-d array, got shape " + shape_of(rewards));
    const GaeSizes size = gae_sizes(rewards);
    return py::make_tuple(size.T, size.N);
  }, py::arg("rewards"));
  m.attr("MAX_THREADS") = kMaxThreads;
  m.attr("REWARD_TERMS") = py::make_tuple("reward_task", "reward_ctrl", "reward_contact", "reward_survive");
  py::list reasons;
  for (int k = 0; k <= static_cast<int>(Instability::kSimulatorError); ++k)
    reasons.append(instability_name(static_cast<Instability>(k)));
  m.attr("INSTABILITY_REASONS") = py::tuple(reasons);
}
