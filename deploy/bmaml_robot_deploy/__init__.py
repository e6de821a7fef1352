"""bmaml_robot_deploy: the torch-free runtime for policies exported by ``bmaml-export``."""

from bmaml_robot_deploy.metadata import FORMAT_VERSION, REQUIRED_KEYS, PolicyMetadata

__version__ = "0.1.0"

__all__ = ["FORMAT_VERSION", "REQUIRED_KEYS", "PolicyMetadata", "__version__"]
