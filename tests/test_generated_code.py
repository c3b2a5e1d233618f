"""The committed protobuf code must be exactly what scripts/gen-protos produces from protos/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("datalayer_pb2.py", "datalayer_pb2.pyi", "datalayer_pb2_grpc.py")


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "gen-protos"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    for name in GENERATED:
        fresh = (tmp_path / "datalayer" / "v1" / name).read_bytes()
        committed = (ROOT / "datalayer" / "v1" / name).read_bytes()
        assert fresh == committed, f"datalayer/v1/{name} is out of date: run scripts/gen-protos"
