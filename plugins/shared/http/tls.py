"""Client TLS for HTTPS scrapes, built per source instance.

Each source gets its own `ssl.SSLContext` from its own parameters, so one
source trusting a private CA (or skipping verification) never changes what
another source accepts: upstream's shared HTTP client lets those settings leak.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from datalayer.plugin import ParameterError


@dataclass(frozen=True)
class ClientTls:
    #: PEM bundle of CAs to trust instead of the system's.
    ca_file: str | None = None
    #: PEM client certificate and key, for pods that require mTLS.
    cert_file: str | None = None
    key_file: str | None = None
    #: Accept any certificate (testing only).
    insecure_skip_verify: bool = False


def check_client_tls(tls: ClientTls) -> None:
    """Start-up validation: files exist, cert and key come together; ParameterError if not."""
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ParameterError("certFile", "certFile and keyFile go together")
    for field, path in (
        ("caFile", tls.ca_file),
        ("certFile", tls.cert_file),
        ("keyFile", tls.key_file),
    ):
        if path is not None and not Path(path).is_file():
            raise ParameterError(field, f"{path}: no such file")


def client_ssl_context(tls: ClientTls) -> ssl.SSLContext:
    """A fresh context for one source (blocking file reads: call from `start()`)."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
