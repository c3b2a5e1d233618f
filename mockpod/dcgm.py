"""A mock NVIDIA DCGM exporter: the page `dcgm-exporter` serves on :9400/metrics.

The families, HELP texts, TYPEs and labels are those of dcgm-exporter's default counters
(`default-counters.csv`) on a DGX-style node, with Kubernetes pod mapping on (the GPU
Operator's default): every GPU series carries `gpu`, `UUID`, `pci_bus_id`, `device`,
`modelName`, `Hostname` and `DCGM_FI_DRIVER_VERSION`, and an allocated GPU also `container`,
`namespace` and `pod`. Counters have no `_total` suffix, as the exporter writes them.
Tests set each GPU's utilisation and owner, and the page follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web

#: (name, type, HELP) of dcgm-exporter's default counters, in the exporter's order.
DEFAULT_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    (
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "counter",
        "Total energy consumption since boot (in mJ).",
    ),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %)."),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %)."),
    ("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %)."),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered."),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
    (
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "counter",
        "Total number of NVLink bandwidth counters for all lanes.",
    ),
    ("DCGM_FI_DEV_VGPU_LICENSE_STATUS", "gauge", "vGPU License status"),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active."),
    (
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "gauge",
        "Ratio of cycles the tensor (HMMA) pipe is active.",
    ),
    (
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "gauge",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
    ),
    (
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "gauge",
        "The rate of data transmitted over the PCIe bus - including both protocol headers "
        "and data payloads - in bytes per second.",
    ),
    (
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "gauge",
        "The rate of data received over the PCIe bus - including both protocol headers "
        "and data payloads - in bytes per second.",
    ),
)

FB_TOTAL_MIB = 81559  # an A100-SXM4-80GB


@dataclass
class Gpu:
    """One GPU of the node: its utilisation (percent) and the pod it is allocated to."""

    index: int
    util: float = 0.0
    pod: str = ""
    namespace: str = "default"
    container: str = "vllm"

    @property
    def uuid(self) -> str:
        return f"GPU-5fd4ab2e-{self.index:04x}-8c3f-7a1d-0b9e6c2f4{self.index:03d}"

    def values(self) -> dict[str, float]:
        busy = self.util / 100.0
        used = int(2000 + busy * 70000) if self.pod else 0
        return {
            "DCGM_FI_DEV_SM_CLOCK": 1410 if busy else 210,
            "DCGM_FI_DEV_MEM_CLOCK": 1593,
            "DCGM_FI_DEV_MEMORY_TEMP": 38 + int(busy * 20),
            "DCGM_FI_DEV_GPU_TEMP": 33 + int(busy * 30),
            "DCGM_FI_DEV_POWER_USAGE": round(61.2 + busy * 300, 3),
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 8_104_552_219 + self.index * 1000,
            "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 0,
            "DCGM_FI_DEV_GPU_UTIL": self.util,
            "DCGM_FI_DEV_MEM_COPY_UTIL": int(self.util * 0.6),
            "DCGM_FI_DEV_ENC_UTIL": 0,
            "DCGM_FI_DEV_DEC_UTIL": 0,
            "DCGM_FI_DEV_XID_ERRORS": 0,
            "DCGM_FI_DEV_FB_FREE": FB_TOTAL_MIB - used,
            "DCGM_FI_DEV_FB_USED": used,
            "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": 0,
            "DCGM_FI_DEV_VGPU_LICENSE_STATUS": 0,
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE": round(busy * 0.98, 6),
            "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": round(busy * 0.41, 6),
            "DCGM_FI_PROF_DRAM_ACTIVE": round(busy * 0.55, 6),
            "DCGM_FI_PROF_PCIE_TX_BYTES": 4_190_371 + int(busy * 9e7),
            "DCGM_FI_PROF_PCIE_RX_BYTES": 11_382_114 + int(busy * 3e8),
        }

    def labels(self, hostname: str) -> str:
        parts = [
            f'gpu="{self.index}"',
            f'UUID="{self.uuid}"',
            f'pci_bus_id="00000000:{0x07 + self.index * 0x08:02X}:00.0"',
            f'device="nvidia{self.index}"',
            'modelName="NVIDIA A100-SXM4-80GB"',
            f'Hostname="{hostname}"',
            'DCGM_FI_DRIVER_VERSION="535.129.03"',
        ]
        if self.pod:
            parts += [
                f'container="{self.container}"',
                f'namespace="{self.namespace}"',
                f'pod="{self.pod}"',
            ]
        return ",".join(parts)


@dataclass
class DcgmNode:
    """The exporter of one node: its GPUs, mutable by tests."""

    hostname: str = "gpu-node-1"
    gpus: list[Gpu] = field(default_factory=lambda: [Gpu(i) for i in range(8)])

    def render(self) -> bytes:
        lines: list[str] = []
        rows = [(gpu.labels(self.hostname), gpu.values()) for gpu in self.gpus]
        for name, kind, help_text in DEFAULT_COUNTERS:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, values in rows:
                value = values[name]
                lines.append(
                    f"{name}{{{labels}}} {value:g}"
                    if isinstance(value, float)
                    else f"{name}{{{labels}}} {value}"
                )
        return ("\n".join(lines) + "\n").encode()

    def allocate(self, pod: str, indices: Sequence[int], utils: Sequence[float]) -> None:
        """Give `pod` the GPUs at `indices`, busy at `utils` percent."""
        for index, util in zip(indices, utils, strict=True):
            self.gpus[index].pod = pod
            self.gpus[index].util = util


async def start_dcgm_exporter(
    node: DcgmNode, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve `node`'s page on `host:port/metrics`; returns the runner and the bound port."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=node.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])
