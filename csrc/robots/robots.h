// One factory per robot; each robot lives in its own file.
#pragma once

#include <memory>
#include <string>

#include "../mujoco_robot.h"
#include "../robot.h"

namespace bmaml {

// The MuJoCo robots are returned before their physics layout is set (MujocoRobot::set_physics).
std::unique_ptr<MujocoRobot> make_half_cheetah(const std::string& xml_path);
std::unique_ptr<MujocoRobot> make_ant(const std::string& xml_path);
std::unique_ptr<MujocoRobot> make_swimmer(const std::string& xml_path);
std::unique_ptr<MujocoRobot> make_hopper(const std::string& xml_path);
std::unique_ptr<MujocoRobot> make_walker2d(const std::string& xml_path);
std::shared_ptr<const Robot> make_navigation2d();

}  // namespace bmaml
