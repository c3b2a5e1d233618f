"""Container health checks for docker-compose.yaml: exit 0 when healthy, 1 (saying why) if not.

    python3 /app/healthcheck.py http http://127.0.0.1:8000/health   # a 2xx answer
    python3 /app/healthcheck.py grpc 127.0.0.1:9002                 # gRPC health: SERVING

The data layer's gRPC health service says SERVING once discovery has reported its first
endpoint set, so `grpc` is "ready to serve schedulers", not just "the port is open".
"""

from __future__ import annotations

import sys
import urllib.request

TIMEOUT = 2.0


def check_http(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            status = int(response.status)
    except OSError as exc:  # URLError, HTTPError (non-2xx), timeouts, refused connections
        return f"{url}: {exc}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def check_grpc(target: str) -> str | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        except grpc.RpcError as exc:
            return f"{target}: {exc.code().name} {exc.details()}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def main(argv: list[str]) -> int:
    checks = {"http": check_http, "grpc": check_grpc}
    if len(argv) != 2 or argv[0] not in checks:
        print("usage: healthcheck.py http URL | grpc HOST:PORT", file=sys.stderr)
        return 2
    problem = checks[argv[0]](argv[1])
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print(f"healthy: {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
