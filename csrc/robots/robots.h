// One factory per robot; each robot lives in its own file.
#pragma once

#include <memory>
#include <string>

#include "../robot.h"

namespace bmaml {

std::shared_ptr<const Robot> make_half_cheetah(const std::string& xml_path);
std::shared_ptr<const Robot> make_ant(const std::string& xml_path);
std::shared_ptr<const Robot> make_swimmer(const std::string& xml_path);
std::shared_ptr<const Robot> make_navigation2d();

}  // namespace bmaml
