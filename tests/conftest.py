"""Fixtures shared by the test modules."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stack import Stack, running_stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Three mock pods, the service on them (file discovery), and a client."""
    async with running_stack(tmp_path) as running:
        yield running
