"""Fixtures of the deploy runtime's tests (torch-free: numpy, onnxruntime, onnx, pytest,
hypothesis) and the Hypothesis profiles, the same as the main suite's ``tests/conftest.py``."""

from __future__ import annotations

import pytest
from deploy_helpers import toy_policies

try:  # property tests (the hostile-input campaign as part of the suite): bounded by default
    from hypothesis import HealthCheck, settings

    settings.register_profile("default", max_examples=40, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    # The long campaign: pytest --hypothesis-profile=long deploy/tests/test_deploy_properties.py
    settings.register_profile("long", max_examples=2000, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("default")
except ImportError:  # hypothesis is a test extra; the property tests skip without it
    pass


@pytest.fixture(scope="session")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Toy HalfCheetahDir policy files (obs 17, act 6): ``"mlp"`` and ``"gru"``."""
    return toy_policies(tmp_path_factory.mktemp("deploy_policies"))
