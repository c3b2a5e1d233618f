"""Fixtures shared by the test modules."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from stack import Stack, running_stack

# The suite shares 2 cores with servers it starts: generation speed is not what we test.
settings.register_profile("datalayer", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("datalayer")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Three mock pods, the service on them (file discovery), and a client."""
    async with running_stack(tmp_path) as running:
        yield running
