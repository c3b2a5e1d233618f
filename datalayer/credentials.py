"""The bearer token both sides read: the service to check calls, the clients to send it.

From a file (never from the command line, where `ps` would show it) or from
$DATALAYER_TOKEN; the token is never logged.
"""

from __future__ import annotations

import os
from pathlib import Path

TOKEN_ENV = "DATALAYER_TOKEN"


def load_token(token_file: str | None) -> str | None:
    """The bearer token from `--token-file` or $DATALAYER_TOKEN; None disables auth."""
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"{token_file}: the token file is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None
