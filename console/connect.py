"""The connection flags every console command shares, and errors an operator can act on.

`list`, `get` and `watch` reach the server exactly as a scheduler would (address, TLS, mTLS,
bearer token), so a command that works here proves the path a scheduler takes. Failures
become one line that names the server and what to change, never a traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc

from datalayer.client import ClientTls, DataLayerClient
from datalayer.credentials import TOKEN_ENV, load_token

DEFAULT_SERVER = "localhost:9002"


class UsageError(ValueError):
    """A flag is wrong (a missing file, a key without its certificate): exit code 2."""


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "-s",
        "--server",
        default=DEFAULT_SERVER,
        metavar="ADDRESS",
        help=f"the data layer's gRPC address (default {DEFAULT_SERVER})",
    )
    group.add_argument("--tls", action="store_true", help="use TLS (system CAs unless --tls-ca)")
    group.add_argument("--tls-ca", metavar="PEM", help="CA that signed the server (implies --tls)")
    group.add_argument("--tls-cert", metavar="PEM", help="client certificate for mTLS")
    group.add_argument("--tls-key", metavar="PEM", help="private key for --tls-cert")
    group.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"send `authorization: Bearer <token>` with the file's content (or ${TOKEN_ENV})",
    )
    group.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each call (default 5)"
    )


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{path}: no such file")
    return file.read_bytes()


def client_tls(args: argparse.Namespace) -> ClientTls | None:
    """TLS settings from the flags; None for plaintext."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not (args.tls or args.tls_ca or args.tls_cert):
        return None
    return ClientTls(ca=_read(args.tls_ca), cert=_read(args.tls_cert), key=_read(args.tls_key))


def open_client(args: argparse.Namespace) -> DataLayerClient:
    """A client for `--server` with the TLS and token flags applied."""
    try:
        token = load_token(args.token_file)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return DataLayerClient(args.server, tls=client_tls(args), token=token)


def describe_rpc_error(exc: grpc.aio.AioRpcError, target: str, timeout: float) -> str:
    """One line that says which server, what went wrong and, where it helps, what to do."""
    code = exc.code()
    details = " ".join((exc.details() or "").split())
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach the data layer at {target}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the data layer at {target} did not answer within {timeout:g}s"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"{target} refused the call: {details} (use --token-file or ${TOKEN_ENV})"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return details
    return f"{target}: {code.name}: {details}"
