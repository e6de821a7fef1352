#include "robot.h"

#include <stdexcept>

#include "robots/robots.h"

namespace bmaml {

const char* instability_name(Instability why) {
  switch (why) {
    case Instability::kNone: return "";
    case Instability::kBadQpos: return "bad qpos (NaN, Inf or huge value)";
    case Instability::kBadQvel: return "bad qvel (NaN, Inf or huge value)";
    case Instability::kBadQacc: return "bad qacc (solver diverged)";
    case Instability::kNonFiniteObs: return "non-finite observation";
    case Instability::kSimulatorError: return "MuJoCo error";
  }
  return "unknown";
}

std::shared_ptr<const Robot> make_robot(const std::string& name, const std::string& xml_path) {
  if (name == "HalfCheetah") return make_half_cheetah(xml_path);
  if (name == "Ant") return make_ant(xml_path);
  if (name == "Swimmer") return make_swimmer(xml_path);
  if (name == "Navigation2D") return make_navigation2d();
  throw std::invalid_argument("robot: expected one of HalfCheetah, Ant, Swimmer, Navigation2D; got '" +
                              name + "'");
}

}  // namespace bmaml
