"""Assembles a running data layer from a loaded configuration, and takes it down again.

Start order follows the data flow (sources → collector → discovery → gRPC);
stop order is the reverse, and every task started here is cancelled and
awaited here.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass, field

import grpc
import msgspec
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from datalayer.cluster.settings import ClusterSettings
from datalayer.cluster.shard import ShardGroup
from datalayer.collector import Collector
from datalayer.config import DataLayerConfig
from datalayer.hub import Hub
from datalayer.plugin import Discovery, DiscoverySink
from datalayer.store import EndpointStore
from server.http_auth import status_auth_middleware
from server.observability import SelfMetrics
from server.prefix import PrefixMatcher, prefix_indexes
from server.security import (
    BearerTokenInterceptor,
    TlsFiles,
    http_ssl_context,
    server_credentials,
)
from server.service import SERVICE_NAME, DataLayerService, add_to_server, declared_attribute_keys
from server.status_page import add_status_routes

log = logging.getLogger(__name__)

#: gRPC messages larger than this are refused (a Subscription is a few KB at most).
MAX_RECEIVE_BYTES = 1 << 20


class ListenError(OSError):
    """A port cannot be listened on; the message names which port and why, in one line."""


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (another process listens there)"
    return exc.strerror or str(exc)


def check_port_free(label: str, host: str, port: int) -> None:
    """Raise ListenError when `port` on `host` is taken (0, any free port, always passes).

    Bound with SO_REUSEADDR as gRPC binds, so a port in TIME_WAIT is not a false alarm;
    a race with another process remains possible and is still caught at the real bind.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(f"{label} port {host}:{port}: {_why(exc)}") from None
    for family, kind, proto, _, address in infos[:1]:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise ListenError(f"{label} port {host}:{port}: {_why(exc)}") from None


@dataclass
class ServeOptions:
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 9002
    metrics_host: str = "0.0.0.0"
    #: 0 picks a free port; None disables the metrics HTTP server.
    metrics_port: int | None = 9090
    shutdown_grace: float = 2.0
    #: TLS (and mTLS with a client CA) for gRPC; plaintext when None.
    tls: TlsFiles | None = None
    #: Bearer token every call but health must carry; kept out of reprs and logs.
    token: str | None = field(default=None, repr=False)
    #: Open Watch streams beyond this are refused with RESOURCE_EXHAUSTED.
    max_subscribers: int = 1000
    #: Endpoints discovery may add; more are refused (and logged), not collected.
    max_endpoints: int = 50_000
    #: Share the gRPC port with other processes (SO_REUSEPORT): `serve --workers`.
    grpc_reuse_port: bool = False
    #: This replica's group address when it differs from `cluster.self` (a worker).
    cluster_self: str | None = None
    #: Group members when they are not `cluster.peers` (the workers of one instance).
    cluster_peers: list[str] | None = None
    #: A second, private gRPC address (a worker's own, for its peers: the shared port
    #: would as likely reach the worker itself).
    extra_grpc_address: str | None = None


class DataLayerApp:
    """One running service: store, hub, collector, discovery, gRPC and metrics servers."""

    def __init__(self, config: DataLayerConfig, options: ServeOptions | None = None) -> None:
        if not config.discoveries:
            raise ValueError(f"{config.file}: the configuration has no discovery")
        self.config = config
        self.options = options or ServeOptions()
        #: This replica's part of a sharded group (`cluster:`); None on its own or in `full`.
        self.group: ShardGroup | None = None
        self.store = EndpointStore()
        # Streams send SYNCED only once the current collector's discovery synced (reloads too).
        self.hub = Hub(
            self.store,
            max_subscribers=self.options.max_subscribers,
            ready=lambda: self.collector.synced,
        )
        self.metrics = SelfMetrics(self.store, self.hub)
        self.collector = self._new_collector(config)
        self.health = health.aio.HealthServicer()
        self.grpc_port = 0
        self.metrics_port = 0
        self._server: grpc.aio.Server | None = None
        self._discovery_task: asyncio.Task[None] | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self._http: web.AppRunner | None = None
        #: Held by a reload's swap and by stop: one lifecycle change at a time.
        self._lifecycle = asyncio.Lock()
        self._stopped = False
        self._swaps: set[asyncio.Task[None]] = set()

    def _new_collector(self, config: DataLayerConfig) -> Collector:
        collector = Collector(
            self.store,
            config.sources,
            config.collector,
            observer=self.metrics,
            max_endpoints=self.options.max_endpoints,
        )
        if self.group is not None:
            self.group.attach(collector)
        return collector

    def _peer_tls(self) -> grpc.ChannelCredentials | None:
        """TLS towards peers when this server speaks TLS: its own certificate as the client
        certificate, its client CA (or, without mTLS, its own certificate) as the roots; so
        peers' certificates must name the addresses they are reached at. Workers reach each
        other on their private loopback ports, which are plaintext."""
        tls = self.options.tls
        if tls is None or self.options.extra_grpc_address is not None:
            return None
        cert, key = tls.cert.read_bytes(), tls.key.read_bytes()
        roots = tls.client_ca.read_bytes() if tls.client_ca else cert
        return grpc.ssl_channel_credentials(roots, key, cert)

    def _start_group(self) -> None:
        """Join the replica group before discovery runs: its gate decides what is collected."""
        settings = self.config.cluster
        if settings is None and self.options.cluster_peers is not None:
            settings = ClusterSettings()  # the workers of `serve --workers` form a group
        if settings is None or settings.mode != "sharded":
            return
        if self.options.cluster_peers is not None:
            settings = msgspec.structs.replace(settings, peers=self.options.cluster_peers)
        me = self.options.cluster_self or settings.resolve_self(self.options.grpc_port)
        if (
            self.options.grpc_port == 0
            and not self.options.cluster_self
            and not settings.self_address
        ):
            raise ValueError("cluster: a group needs `cluster.self` or a fixed --grpc-port")
        grace = settings.grace or self.config.collector.staleness_threshold
        self.group = ShardGroup(
            settings, me, self.store, grace, token=self.options.token, credentials=self._peer_tls()
        )
        self.group.attach(self.collector)
        self.group.start()
        log.info("replica %s of a sharded group (grace %gs)", me, grace)

    async def start(self) -> None:
        """Start everything; on failure (a port in use: ListenError) stop what had started."""
        try:
            for binding in self.config.sources:
                binding.source.start(binding.extractors)
            self.collector.start()
            self._start_group()
            self._discovery_task = asyncio.create_task(self._run_discovery(), name="discovery")
            await self._start_grpc()
            await self._start_metrics_http()
        except BaseException:
            await self.stop()
            raise
        self._ready_task = asyncio.create_task(self._serve_when_synced(), name="health")
        log.info(
            "serving gRPC on %s:%d, metrics on %s",
            self.options.grpc_host,
            self.grpc_port,
            f"port {self.metrics_port}" if self._http else "no port",
            extra={"grpc_port": self.grpc_port, "metrics_port": self.metrics_port},
        )

    async def _start_grpc(self) -> None:
        interceptors = [BearerTokenInterceptor(self.options.token)] if self.options.token else []
        interceptors.append(self.metrics.watch_interceptor())
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                ("grpc.so_reuseport", 1 if self.options.grpc_reuse_port else 0),
            ],
        )
        keys = lambda: declared_attribute_keys(self.config)  # noqa: E731 - read at each Watch
        owner = self.group.me if self.group is not None else ""
        # MatchPrefix reads whichever kv-block-index the current config has (reloads too).
        prefix = PrefixMatcher(self.store, lambda: prefix_indexes(self.config.plugins.values()))
        service = DataLayerService(
            self.store, self.hub, attribute_keys=keys, owner=owner, prefix=prefix
        )
        add_to_server(service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        host, wanted = self.options.grpc_host, self.options.grpc_port
        # gRPC reports a taken port only as "Failed to bind" (and a C-core log line), so
        # look first: the operator gets the port and the reason in one line.
        if not self.options.grpc_reuse_port:
            check_port_free("gRPC", host, wanted)
        address = f"{host}:{wanted}"
        try:
            if self.options.tls is not None:
                port = server.add_secure_port(address, server_credentials(self.options.tls))
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio >= 1.5x raises instead of returning 0
            raise ListenError(f"gRPC port {host}:{wanted}: cannot listen ({exc})") from None
        if port == 0:
            raise ListenError(f"gRPC port {host}:{wanted}: cannot listen")
        extra = self.options.extra_grpc_address
        if extra is not None and server.add_insecure_port(extra) == 0:
            raise ListenError(f"gRPC address {extra}: cannot listen")
        self.grpc_port = port
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._server = server

    async def _start_metrics_http(self) -> None:
        if self.options.metrics_port is None:
            return
        # The status pages show endpoint data: the same token and TLS rule as gRPC.
        app = web.Application(middlewares=[status_auth_middleware(self.options.token)])
        app.router.add_get("/metrics", self._serve_metrics)
        add_status_routes(app, self)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, wanted = self.options.metrics_host, self.options.metrics_port
        ssl_context = http_ssl_context(self.options.tls) if self.options.tls else None
        site = web.TCPSite(runner, host, wanted, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(f"metrics port {host}:{wanted}: {_why(exc)}") from None
        self._http = runner
        addresses = runner.addresses
        self.metrics_port = int(addresses[0][1]) if addresses else 0

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _run_discovery(self) -> None:
        """Every discovery at once, each through its own scoped sink."""
        sinks = [(d, self.collector.sink_for(d.name)) for d in self.config.discoveries]
        await asyncio.gather(*(self._run_one_discovery(d, sink) for d, sink in sinks))

    async def _run_one_discovery(self, discovery: Discovery, sink: DiscoverySink) -> None:
        try:
            await discovery.run(sink)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("discovery %r failed; its endpoint set is frozen", discovery.name)

    async def _serve_when_synced(self) -> None:
        await self.collector.synced.wait()
        if self.group is not None:
            # SERVING (the readiness probe) only with the whole view: every peer's shard too.
            await self.group.relayed.wait()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        log.info("discovery synced: %d endpoints; health is SERVING", len(self.store))

    async def reload(self, config: DataLayerConfig) -> None:
        """Swap in a new, already validated configuration.

        The store, the hub and every Watch stream stay: subscribers see only what
        changes (endpoints the new discovery no longer reports are removed, values
        move as the new sources read them). The old sources, extractors and
        discovery are stopped and closed first, so nothing of them keeps running.

        Reloads are serialized: the swap awaits (closing HTTP sessions, cancelling
        lanes), and two SIGHUPs a few milliseconds apart used to interleave there,
        both closing the same old collector and each starting a new one, so one
        collector and its discovery kept polling unseen. The swap also runs as its
        own task so that cancelling a caller (shutdown) never leaves it half done;
        `stop` takes the same lock and waits for it.
        """
        if not config.discoveries:
            raise ValueError(f"{config.file}: the configuration has no discovery")
        swap = asyncio.create_task(self._locked_swap(config), name="reload")
        self._swaps.add(swap)  # a strong reference while it runs, even if the caller is gone
        swap.add_done_callback(self._swaps.discard)
        await asyncio.shield(swap)

    async def _locked_swap(self, config: DataLayerConfig) -> None:
        async with self._lifecycle:
            if self._stopped:
                log.info("reload of %s skipped: the service is stopping", config.file)
                return
            await self._swap(config)

    async def _swap(self, config: DataLayerConfig) -> None:
        """Stop the old collector and discovery, then start the new ones (lock held)."""
        old_collector, old_config = self.collector, self.config
        if self._discovery_task is not None:
            self._discovery_task.cancel()
            await asyncio.gather(self._discovery_task, return_exceptions=True)
            self._discovery_task = None
        await old_collector.close()
        for plugin in old_config.plugins.values():
            await plugin.close()
        new_collector = self._new_collector(config)
        # Both collectors are known here (and only here): lanes of sources whose
        # configuration did not change keep their state, so a reload turns nothing stale.
        carried = new_collector.inherit(old_collector)
        log.info("reload keeps the state of %d unchanged lanes", carried)
        self.config, self.collector = config, new_collector
        for binding in config.sources:
            binding.source.start(binding.extractors)
        new_collector.start()
        self._discovery_task = asyncio.create_task(self._run_discovery(), name="discovery")
        log.info("configuration reloaded from %s", config.file)

    async def stop(self) -> None:
        """Close streams, stop serving, cancel every task, release every connection."""
        async with self._lifecycle:  # waits for a reload in progress; later ones are skipped
            self._stopped = True
            await self._stop()

    async def _stop(self) -> None:
        self.hub.close()
        for task in (self._ready_task, self._discovery_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.group is not None:
            await self.group.close()
        if self._server is not None:
            await self.health.enter_graceful_shutdown()
            await self._server.stop(self.options.shutdown_grace)
        await self.collector.close()
        for plugin in self.config.plugins.values():
            await plugin.close()
        if self._http is not None:
            await self._http.cleanup()
        log.info("stopped")
