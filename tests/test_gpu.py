"""The GPU collector maps NVML readings to the catalog's gauges and never fails a scrape.

NVML needs a driver and a GPU, so these tests drive the collector with a stand-in module
that has pynvml's functions; the real NVML is exercised on a GPU machine (see the notes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from aiobs.metrics.gpu import GpuCollector, open_gpu_collector

PID = 4242


class NVMLError(Exception):
    pass


@dataclass
class _Memory:
    used: int
    total: int


@dataclass
class _Utilization:
    gpu: int
    memory: int = 0


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int | None


@dataclass
class FakeNVML:
    """pynvml's surface for two devices; device 1 does not report power."""

    fail_init: bool = False
    devices: int = 2
    calls: list[str] = field(default_factory=list)
    NVML_TEMPERATURE_GPU: int = 0

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise NVMLError("driver not loaded")

    def nvmlDeviceGetCount(self) -> int:
        return self.devices

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H200" if handle == 0 else b"NVIDIA L4"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Utilization:
        return _Utilization(gpu=87 if handle == 0 else 3)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:
        return _Memory(used=(handle + 1) * 2**30, total=80 * 2**30)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 61 + handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle == 1:
            raise NVMLError("not supported")
        return 350_500

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[_Process]:
        return [_Process(PID, 3 * 2**30), _Process(PID + 1, 2**30), _Process(PID, None)]


def _scrape(collector: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    generate_latest(registry)  # the exposition path itself must not raise
    return registry


def test_readings_map_to_catalog_gauges() -> None:
    """Utilization becomes a ratio, power watts, and only this process's memory counts."""
    registry = _scrape(GpuCollector(FakeNVML(), pid=PID))
    value = registry.get_sample_value
    assert value("ai_gpu_utilization_ratio", {"gpu": "0", "name": "NVIDIA H200"}) == 0.87
    assert value("ai_gpu_utilization_ratio", {"gpu": "1", "name": "NVIDIA L4"}) == 0.03
    assert value("ai_gpu_memory_used_bytes", {"gpu": "1"}) == 2 * 2**30
    assert value("ai_gpu_memory_total_bytes", {"gpu": "0"}) == 80 * 2**30
    assert value("ai_gpu_process_memory_used_bytes", {"gpu": "0"}) == 3 * 2**30
    assert value("ai_gpu_temperature_celsius", {"gpu": "1"}) == 62
    assert value("ai_gpu_power_watts", {"gpu": "0"}) == 350.5


def test_unsupported_readings_are_left_out() -> None:
    """A reading the device cannot give is absent from the scrape; the rest is there."""
    registry = _scrape(GpuCollector(FakeNVML(), pid=PID))
    assert registry.get_sample_value("ai_gpu_power_watts", {"gpu": "1"}) is None
    assert registry.get_sample_value("ai_gpu_temperature_celsius", {"gpu": "1"}) == 62


class _BrokenNVML(FakeNVML):
    def nvmlDeviceGetCount(self) -> int:
        raise NVMLError("GPU fell off the bus")


def test_a_failing_nvml_never_breaks_the_scrape() -> None:
    """When NVML itself fails mid-life, the scrape succeeds without GPU samples."""
    registry = _scrape(GpuCollector(_BrokenNVML(), pid=PID))
    assert registry.get_sample_value("ai_gpu_memory_total_bytes", {"gpu": "0"}) is None


def test_no_driver_or_no_gpu_registers_nothing() -> None:
    """Without NVML or without a device there is no collector."""
    assert open_gpu_collector(FakeNVML(fail_init=True)) is None
    assert open_gpu_collector(FakeNVML(devices=0)) is None
    assert isinstance(open_gpu_collector(FakeNVML()), GpuCollector)


def test_observability_serves_gpu_readings_on_metrics() -> None:
    """With NVML present the readings appear in the service's exposition; with
    AIOBS_GPU_METRICS=false they do not."""
    from aiobs import Observability, Settings

    registry = CollectorRegistry()
    obs = Observability(Settings.load(environ={}), registry=registry, environ={}, nvml=FakeNVML())
    text = generate_latest(obs.exposition_registry()).decode()
    assert 'ai_gpu_memory_total_bytes{gpu="0"}' in text
    off = Observability(
        Settings.load({"gpu_metrics": False}, environ={}),
        registry=CollectorRegistry(),
        environ={},
        nvml=FakeNVML(),
    )
    assert off._gpu_collector is None
    obs.shutdown(1)
    off.shutdown(1)
