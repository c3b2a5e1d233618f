"""The `datalayer` command: serve, validate, plugins, list, get, watch, demo, mock-pod."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from console import add_commands as add_console_commands
from datalayer.config import ConfigError, DataLayerConfig, load_config_file
from datalayer.credentials import TOKEN_ENV, load_token
from datalayer.parameters import json_schema, render
from datalayer.plugin import DataSource, Discovery, Extractor, Plugin
from datalayer.registry import Registry, default_registry, plugin_kind
from server.app import DataLayerApp, ListenError, ServeOptions
from server.observability import setup_logging
from server.runtime import run_async, wait_for_signal
from server.security import TlsFiles

log = logging.getLogger("datalayer")

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # `serve --workers` starts workers with the same flags.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    setup_logging(getattr(args, "log_format", "text"), getattr(args, "log_level", "info"))
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `--token` must not silently mean `--token-file`.
    parser = argparse.ArgumentParser(
        prog="datalayer",
        description="The data layer of an LLM inference router, as a service.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", allow_abbrev=False, help="run the service from a config file")
    serve.add_argument("--config", required=True, help="YAML config file")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (gRPC and metrics)")
    serve.add_argument("--grpc-port", type=int, default=9002)
    serve.add_argument("--metrics-port", type=int, default=9090, help="self-metrics; -1 disables")
    serve.add_argument("--metrics-host", help="address of the metrics port (default: --host)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the gRPC port (SO_REUSEPORT), one replica group: "
        "each scrapes its share, any answers for all",
    )
    # Set by `--workers` for each worker; not for operators.
    serve.add_argument("--worker-address", help=argparse.SUPPRESS)
    serve.add_argument("--worker-peers", help=argparse.SUPPRESS)
    serve.add_argument("--tls-cert", help="PEM certificate: serve gRPC over TLS")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--tls-client-ca", help="PEM CA: require client certificates (mTLS)")
    serve.add_argument(
        "--token-file",
        help=f"require `authorization: Bearer <token>` (the file's content; or ${TOKEN_ENV})",
    )
    serve.add_argument("--max-subscribers", type=int, default=1000)
    serve.add_argument("--max-endpoints", type=int, default=50_000)
    serve.add_argument(
        "--endpoints-file",
        help="file-discovery for a config without one (an EndpointPickerConfig gets its pods "
        "from an InferencePool upstream)",
    )
    _add_logging_flags(serve)
    serve.set_defaults(handler=_cmd_serve)

    validate = sub.add_parser(
        "validate", allow_abbrev=False, help="check a config file; exit 0 if valid, 2 if not"
    )
    validate.add_argument("file")
    validate.set_defaults(handler=_cmd_validate, log_level="warning")

    plugins = sub.add_parser("plugins", allow_abbrev=False, help="list the registered plugin types")
    plugins.add_argument(
        "--json",
        action="store_true",
        help="print {type: {kind, description, inputType|outputType, parametersSchema}}",
    )
    plugins.set_defaults(handler=_cmd_plugins, log_level="warning")

    add_console_commands(sub)

    demo = sub.add_parser(
        "demo",
        allow_abbrev=False,
        help="start three mock vLLM pods and the service, and stream updates",
    )
    from server.demo import add_arguments as add_demo_arguments

    add_demo_arguments(demo)
    _add_logging_flags(demo, default_level="warning")
    demo.set_defaults(handler=_cmd_demo)

    mock = sub.add_parser("mock-pod", allow_abbrev=False, help="run mock vLLM pods (see mockpod/)")
    from mockpod.cli import add_arguments as add_mock_arguments

    add_mock_arguments(mock)
    _add_logging_flags(mock)
    mock.set_defaults(handler=_cmd_mock_pod)
    return parser


def _add_logging_flags(parser: argparse.ArgumentParser, default_level: str = "info") -> None:
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default=default_level
    )


def _load(path: str, registry: Registry) -> DataLayerConfig | None:
    try:
        return load_config_file(path, registry)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return None


def _cmd_validate(args: argparse.Namespace) -> int:
    config = _load(args.file, default_registry())
    if config is None:
        return EXIT_CONFIG
    for warning in config.warnings:
        print(f"warning: {args.file}: {warning}", file=sys.stderr)
    for warning in plugin_warnings(config):
        print(f"warning: {args.file}: {warning}", file=sys.stderr)
    print(
        f"{args.file}: OK ({len(config.plugins)} plugins, {len(config.sources)} sources, "
        f"discovery {_discovery_name(config)})"
    )
    return 0


def plugin_warnings(config: DataLayerConfig) -> list[str]:
    """What plugins found worth saying at load time (a discovery file not there yet)."""
    found: list[str] = []
    for plugin in [*config.plugins.values(), *config.discoveries]:
        for warning in getattr(plugin, "warnings", ()):
            if warning not in found:
                found.append(warning)
    return found


def _discovery_name(config: DataLayerConfig) -> str:
    if not config.discoveries:
        return "none: `serve` needs --endpoints-file"
    return ", ".join(repr(d.name) for d in config.discoveries)


def plugin_catalogue(registry: Registry) -> dict[str, dict[str, object]]:
    """Every registered type: its kind, description, payload type and parameters' JSON Schema."""
    catalogue: dict[str, dict[str, object]] = {}
    for cls in registry:
        entry: dict[str, object] = {"kind": plugin_kind(cls), "description": cls.description}
        if issubclass(cls, DataSource):
            entry["outputType"] = cls.output_type.__name__
        elif issubclass(cls, Extractor):
            entry["inputType"] = cls.input_type.__name__
        entry["parametersSchema"] = json_schema(cls.Parameters)
        catalogue[cls.type_name] = entry
    return catalogue


def _describe_plugin(cls: type[Plugin]) -> list[str]:
    flow = ""
    if issubclass(cls, DataSource):
        flow = f"  produces {cls.output_type.__name__}"
    elif issubclass(cls, Extractor):
        flow = f"  takes {cls.input_type.__name__}"
    lines = [f"{cls.type_name}  [{plugin_kind(cls)}]{flow}"]
    if cls.description:
        lines.append(f"    {cls.description}")
    return lines + render(cls.Parameters)


def _cmd_plugins(args: argparse.Namespace) -> int:
    registry = default_registry()
    if args.json:
        text = json.dumps(plugin_catalogue(registry), indent=2) + "\n"
    else:
        text = "".join(line + "\n" for cls in registry for line in _describe_plugin(cls))
    return _emit(text)


def _emit(text: str) -> int:
    """Print `text`; a reader that leaves early (`datalayer plugins | head`) is not an error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


def summarize(config: DataLayerConfig) -> str:
    """The start-up line that says what this instance will do."""
    sources = ", ".join(
        f"{b.source.name} every {b.interval * 1000:g}ms -> "
        + "+".join(e.name for e in b.extractors)
        for b in config.sources
    )
    discoveries = ", ".join(f"{d.name} ({d.type_name})" for d in config.discoveries) or "-"
    return (
        f"config {config.file}: discovery {discoveries}; sources: {sources}; "
        f"staleness after {config.collector.staleness_threshold:g}s"
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    registry = default_registry()
    config = _load(args.config, registry)
    if config is None:
        return EXIT_CONFIG
    problem = _attach_endpoints_file(config, args.endpoints_file, registry)
    if problem:
        print(f"config error: {args.config}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in [*config.warnings, *plugin_warnings(config)]:
        log.warning("%s: %s", args.config, warning)
    log.info(summarize(config))
    try:
        tls = _tls_files(args)
        token = load_token(args.token_file)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.workers > 1:
        return _supervise(args, config)
    worker = args.worker_address is not None
    options = ServeOptions(
        grpc_host=args.host,
        grpc_port=args.grpc_port,
        metrics_host=args.metrics_host or args.host,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        tls=tls,
        token=token,
        max_subscribers=args.max_subscribers,
        max_endpoints=args.max_endpoints,
        grpc_reuse_port=worker,
        cluster_self=args.worker_address,
        cluster_peers=args.worker_peers.split(",") if worker else None,
        extra_grpc_address=args.worker_address,
    )
    if token:
        log.info("bearer-token authentication is on (token not shown)")

    exit_code = 0

    async def serve() -> None:
        nonlocal exit_code
        app = DataLayerApp(config, options)
        try:
            await app.start()
        except ListenError as exc:  # a port in use: the operator's to fix, not a crash
            print(f"error: {exc}", file=sys.stderr)
            exit_code = EXIT_CONFIG
            return
        # One reloader: SIGHUPs during a reload coalesce into one more reload after it
        # (each reads the file afresh), so a burst of signals never runs reloads at once.
        requested = asyncio.Event()

        async def reloader() -> None:
            while True:
                await requested.wait()
                requested.clear()
                try:
                    await _reload(app, args.config, args.endpoints_file, registry)
                except Exception:
                    log.exception("reload failed; the service keeps running")

        reloads = asyncio.create_task(reloader(), name="reloader")
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, requested.set)
        try:
            await wait_for_signal()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            reloads.cancel()  # a swap in progress finishes: app.stop waits for it
            await asyncio.gather(reloads, return_exceptions=True)
            await app.stop()

    run_async(serve)
    return exit_code


def _supervise(args: argparse.Namespace, config: DataLayerConfig) -> int:
    """`--workers N`: this process starts and watches the workers (server/workers.py)."""
    from server.workers import Supervisor

    if config.cluster is not None:
        print("error: --workers and a `cluster:` section cannot be combined yet", file=sys.stderr)
        return EXIT_CONFIG
    metrics_port = None if args.metrics_port < 0 else args.metrics_port
    supervisor = Supervisor(
        args.argv[1:], args.workers, args.metrics_host or args.host, metrics_port
    )

    async def supervise() -> None:
        stop = asyncio.Event()
        waiting = asyncio.create_task(wait_for_signal())
        waiting.add_done_callback(lambda _: stop.set())
        try:
            await supervisor.run(stop)
        finally:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)

    run_async(supervise)
    return 0


async def _reload(
    app: DataLayerApp, path: str, endpoints_file: str | None, registry: Registry
) -> None:
    """SIGHUP: load the file again; a bad file is refused and the running config kept."""
    try:
        config = await asyncio.to_thread(load_config_file, path, registry)
    except ConfigError as exc:
        log.error("reload refused, keeping the last good configuration: %s", exc)
        return
    problem = _attach_endpoints_file(config, endpoints_file, registry)
    if problem:
        log.error("reload refused, keeping the last good configuration: %s: %s", path, problem)
        return
    for warning in config.warnings:
        log.warning("%s: %s", path, warning)
    log.info(summarize(config))
    await app.reload(config)


def _tls_files(args: argparse.Namespace) -> TlsFiles | None:
    if not (args.tls_cert or args.tls_key or args.tls_client_ca):
        return None
    if not (args.tls_cert and args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    files = TlsFiles(
        Path(args.tls_cert),
        Path(args.tls_key),
        Path(args.tls_client_ca) if args.tls_client_ca else None,
    )
    for path in (files.cert, files.key, files.client_ca):
        if path is not None and not path.is_file():
            raise ValueError(f"{path}: no such file")
    return files


def _attach_endpoints_file(
    config: DataLayerConfig, endpoints_file: str | None, registry: Registry
) -> str | None:
    """Give a config without discovery a file-discovery; say why not when that is impossible."""
    if endpoints_file is None:
        if config.discovery is None:
            return "no dataLayer.discovery: add one, or pass --endpoints-file FILE"
        return None
    if config.discovery is not None:
        return f"has dataLayer.discovery {config.discovery.name!r}: drop --endpoints-file"
    cls = registry.get("file-discovery")
    if cls is None or not issubclass(cls, Discovery):
        return "the file-discovery plugin is not installed"
    config.discovery = cls("file-discovery", cls.Parameters(path=endpoints_file))
    return None


def _cmd_demo(args: argparse.Namespace) -> int:
    from server.demo import run_from_args

    run_async(lambda: run_from_args(args))
    return 0


def _cmd_mock_pod(args: argparse.Namespace) -> int:
    from mockpod.cli import run as run_mock

    run_async(lambda: run_mock(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
