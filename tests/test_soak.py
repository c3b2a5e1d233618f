"""The 60-second soak (bench/soak.py) as part of the suite: it exits non-zero on RSS drift over
5 %, a leaked task, a lost event or a mirror that differs from the server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sixty_second_soak_passes() -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "60", "--pods", "20", "--fault-every", "15"],
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak: OK" in result.stdout
    assert "| polls" in result.stdout  # the table was printed
