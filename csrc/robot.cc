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

std::shared_ptr<const Robot> make_robot(const std::string& name, const std::string& xml_path,
                                        const std::vector<std::string>& physics) {
  if (name == "Navigation2D") {
    if (!physics.empty()) throw std::invalid_argument("physics: Navigation2D has no physics fields");
    return make_navigation2d();
  }
  std::unique_ptr<MujocoRobot> robot;
  if (name == "HalfCheetah") robot = make_half_cheetah(xml_path);
  else if (name == "Ant") robot = make_ant(xml_path);
  else if (name == "Swimmer") robot = make_swimmer(xml_path);
  else if (name == "Hopper") robot = make_hopper(xml_path);
  else if (name == "Walker2d") robot = make_walker2d(xml_path);
  else throw std::invalid_argument(
      "robot: expected one of HalfCheetah, Ant, Swimmer, Hopper, Walker2d, Navigation2D; got '" + name + "'");
  robot->set_physics(physics);
  return robot;
}

}  // namespace bmaml
