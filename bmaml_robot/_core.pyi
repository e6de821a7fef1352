# Type stub of the compiled extension (csrc/, built by scikit-build-core): its names are untyped.
# With this stub, mypy knows ``bmaml_robot._core`` is a submodule, so ``from bmaml_robot import _core``
# type-checks; what the core holds is checked at its boundary by the tests.
from typing import Any

def __getattr__(name: str) -> Any: ...
