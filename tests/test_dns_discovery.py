"""dns-discovery against a real DNS server on loopback (UDP, real DNS wire format) whose
answers the test changes, plus the system resolver on `localhost`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import dns.message
import dns.rcode
import dns.rrset
import pytest

from datalayer.model import EndpointSpec
from datalayer.parameters import Duration
from datalayer.plugin import ParameterError
from plugins.discovery.dns.discovery import (
    DnsDiscovery,
    DnsDiscoveryParameters,
    ResolveError,
    endpoint_name,
)


class Zone(asyncio.DatagramProtocol):
    """Answers A/AAAA queries for one name from mutable record lists; can go silent."""

    def __init__(self, name: str) -> None:
        self.name = name.rstrip(".") + "."
        self.a: list[str] = []
        self.aaaa: list[str] = []
        self.exists = True
        self.silent = False
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        if self.silent or self.transport is None:
            return
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        kind = dns.rdatatype.to_text(question.rdtype)
        if str(question.name) != self.name or not self.exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            records = {"A": self.a, "AAAA": self.aaaa}.get(kind, [])
            if records:
                response.answer.append(dns.rrset.from_text_list(self.name, 1, "IN", kind, records))
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def zone() -> AsyncIterator[tuple[Zone, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Zone("vllm.test"), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    yield protocol, port
    transport.close()


class Sink:
    def __init__(self) -> None:
        self.sets: list[list[str]] = []
        self.synced = asyncio.Event()
        self.changed = asyncio.Condition()
        self.specs: dict[str, EndpointSpec] = {}

    async def upsert(self, spec: EndpointSpec) -> None:
        raise AssertionError("dns-discovery replaces the whole set")

    async def delete(self, name: str) -> None:
        raise AssertionError("dns-discovery replaces the whole set")

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        self.specs = {s.name: s for s in specs}
        async with self.changed:
            self.sets.append(sorted(self.specs))
            self.changed.notify_all()

    def mark_synced(self) -> None:
        self.synced.set()

    async def wait_for(self, names: list[str]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.sets[-1:] == [names]), 3)


def discovery(port: int, **overrides: object) -> DnsDiscovery:
    params = DnsDiscoveryParameters(
        hostname="vllm.test",
        port=8000,
        refresh_interval=Duration(0.05),
        nameservers=[f"127.0.0.1:{port}"],
        timeout=Duration(0.3),
        labels={"app": "vllm"},
    )
    for key, value in overrides.items():
        setattr(params, key, value)
    return DnsDiscovery("dns", params)


async def test_endpoints_follow_the_answer_set(zone: tuple[Zone, int]) -> None:
    server, port = zone
    server.a = ["10.0.0.1", "10.0.0.2"]
    server.aaaa = ["fd00::7"]
    sink = Sink()
    task = asyncio.create_task(discovery(port).run(sink))
    try:
        await sink.wait_for(["vllm.test-10.0.0.1", "vllm.test-10.0.0.2", "vllm.test-fd00--7"])
        assert sink.synced.is_set()
        assert sink.specs["vllm.test-fd00--7"] == EndpointSpec(
            "vllm.test-fd00--7", "fd00::7", 8000, "", {"app": "vllm"}
        )
        server.a = ["10.0.0.2", "10.0.0.3"]  # scale: one replaced
        server.aaaa = []
        await sink.wait_for(["vllm.test-10.0.0.2", "vllm.test-10.0.0.3"])
        server.exists = False  # scaled to zero: the name is gone
        await sink.wait_for([])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_no_answer_keeps_the_last_good_set(
    zone: tuple[Zone, int], caplog: pytest.LogCaptureFixture
) -> None:
    server, port = zone
    server.a = ["10.0.0.1"]
    sink = Sink()
    task = asyncio.create_task(discovery(port).run(sink))
    try:
        await sink.wait_for(["vllm.test-10.0.0.1"])
        server.silent = True
        queries = server.queries
        async with asyncio.timeout(3):
            while server.queries < queries + 4:  # noqa: ASYNC110 - counting real UDP queries
                await asyncio.sleep(0.05)
        assert sink.sets[-1] == ["vllm.test-10.0.0.1"]
        assert "keeping the last good set" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_family_filter(zone: tuple[Zone, int]) -> None:
    server, port = zone
    server.a = ["10.0.0.1"]
    server.aaaa = ["fd00::1"]
    assert await discovery(port, family="ipv6").resolve() == ["fd00::1"]
    assert await discovery(port, family="ipv4").resolve() == ["10.0.0.1"]


async def test_silent_server_is_a_resolve_error(zone: tuple[Zone, int]) -> None:
    server, port = zone
    server.silent = True
    with pytest.raises(ResolveError, match=r"vllm\.test A"):
        await discovery(port).resolve()


async def test_system_resolver_on_localhost() -> None:
    dns_plugin = DnsDiscovery(
        "dns", DnsDiscoveryParameters(hostname="localhost", port=8000, family="ipv4")
    )
    assert await dns_plugin.resolve() == ["127.0.0.1"]
    missing = DnsDiscovery(
        "dns", DnsDiscoveryParameters(hostname="no-such-host.invalid", port=8000)
    )
    assert await missing.resolve() == []


def test_names_and_parameter_errors() -> None:
    assert endpoint_name("pods", "fd00::1") == "pods-fd00--1"

    with pytest.raises(ParameterError, match="nameservers\\[0\\]"):
        DnsDiscovery("d", DnsDiscoveryParameters("h", 1, nameservers=["1.2.3.4:x"]))
    with pytest.raises(ParameterError, match="port"):
        DnsDiscovery("d", DnsDiscoveryParameters("h", 0))
