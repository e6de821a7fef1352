"""bmaml_robot_deploy: the torch-free runtime for policies exported by ``bmaml-export``.

Needs only numpy and onnxruntime::

    from bmaml_robot_deploy import Controller, run_control_loop, UdpRobot

    controller = Controller("policy.onnx", expected_robot="HalfCheetah")
    robot = UdpRobot.for_controller(controller, bind=("0.0.0.0", 9870))
    stats = run_control_loop(controller, robot, steps=1000)   # at the file's control rate
    print(stats.summary())

``SimulatedRobot`` (the MuJoCo robots of training) needs the main package, ``bmaml-robot``.
"""

from bmaml_robot_deploy.controller import Controller, session_options
from bmaml_robot_deploy.loop import LoopStats, RewardRobot, Robot, run_control_loop
from bmaml_robot_deploy.metadata import FORMAT_VERSION, OPTIONAL_KEYS, REQUIRED_KEYS, PolicyMetadata
from bmaml_robot_deploy.udp_link import UdpRobot
from bmaml_robot_deploy.udp_server import UdpRobotServer

__version__ = "0.1.0"


def __getattr__(name: str):  # SimulatedRobot is importable without bmaml_robot; using it needs it
    if name == "SimulatedRobot":
        from bmaml_robot_deploy.sim import SimulatedRobot

        return SimulatedRobot
    raise AttributeError(f"module 'bmaml_robot_deploy' has no attribute {name!r}")


__all__ = [
    "FORMAT_VERSION",
    "OPTIONAL_KEYS",
    "REQUIRED_KEYS",
    "Controller",
    "LoopStats",
    "PolicyMetadata",
    "RewardRobot",
    "Robot",
    "SimulatedRobot",
    "UdpRobot",
    "UdpRobotServer",
    "__version__",
    "run_control_loop",
    "session_options",
]
