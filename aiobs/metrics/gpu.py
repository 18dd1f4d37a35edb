"""GPU telemetry read from NVML at scrape time (extra ``gpu``: nvidia-ml-py).

A Prometheus collector: every scrape asks NVML for each device's utilization, memory,
temperature, power and this process's memory. A reading NVML cannot give (a device that does
not support it, a driver hiccup) is left out of that scrape; the collector never raises.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from aiobs import catalog

_log = logging.getLogger("aiobs.gpu")


def _family(metric: catalog.Metric) -> GaugeMetricFamily:
    return GaugeMetricFamily(metric.name, metric.help, labels=metric.labels)


class GpuCollector:
    """Reads every NVML device on each ``collect()``; ``nvml`` is the ``pynvml`` module (or a
    stand-in with the same functions), already initialised."""

    def __init__(self, nvml: Any, pid: int | None = None) -> None:
        self._nvml = nvml
        self._pid = os.getpid() if pid is None else pid

    def describe(self) -> list[Metric]:
        # Declared up front so that registering never triggers an NVML read.
        return [_family(metric) for metric in _GPU_METRICS]

    def collect(self) -> Iterator[Metric]:
        families = {metric.name: _family(metric) for metric in _GPU_METRICS}
        try:
            count = int(self._nvml.nvmlDeviceGetCount())
        except Exception:  # noqa: BLE001 - a scrape must never fail because of NVML
            _log.debug("NVML device count failed", exc_info=True)
            count = 0
        for index in range(count):
            self._read_device(index, families)
        yield from families.values()

    def _read_device(self, index: int, families: dict[str, GaugeMetricFamily]) -> None:
        nvml = self._nvml
        gpu = str(index)
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # noqa: BLE001
            return

        def read(metric: catalog.Metric, labels: list[str], reading: Callable[[], float]) -> None:
            try:
                value = float(reading())
            except Exception:  # noqa: BLE001 - unsupported on this device: leave it out
                return
            families[metric.name].add_metric(labels, value)

        name = _text(_safe(lambda: nvml.nvmlDeviceGetName(handle), "unknown"))
        read(
            catalog.GPU_UTILIZATION,
            [gpu, name],
            lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
        )
        memory = _safe(lambda: nvml.nvmlDeviceGetMemoryInfo(handle), None)
        if memory is not None:
            read(catalog.GPU_MEMORY_USED, [gpu], lambda: memory.used)
            read(catalog.GPU_MEMORY_TOTAL, [gpu], lambda: memory.total)
        read(catalog.GPU_PROCESS_MEMORY_USED, [gpu], lambda: self._process_memory(handle))
        read(
            catalog.GPU_TEMPERATURE,
            [gpu],
            lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
        )
        read(catalog.GPU_POWER, [gpu], lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)

    def _process_memory(self, handle: Any) -> float:
        processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        return float(
            sum(process.usedGpuMemory or 0 for process in processes if process.pid == self._pid)
        )


_GPU_METRICS = (
    catalog.GPU_UTILIZATION,
    catalog.GPU_MEMORY_USED,
    catalog.GPU_MEMORY_TOTAL,
    catalog.GPU_PROCESS_MEMORY_USED,
    catalog.GPU_TEMPERATURE,
    catalog.GPU_POWER,
)


def open_gpu_collector(nvml: Any = None) -> GpuCollector | None:
    """A collector over NVML, or ``None`` (logged once) without nvidia-ml-py, a driver or a
    GPU. ``nvml`` replaces the ``pynvml`` module (tests pass a stand-in)."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            _log.info("GPU metrics off: nvidia-ml-py is not installed (pip install 'aiobs[gpu]')")
            return None
        nvml = pynvml
    try:
        nvml.nvmlInit()
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as error:  # noqa: BLE001 - no driver, no library: no GPU metrics
        _log.info("GPU metrics off: NVML unavailable (%s)", type(error).__name__)
        return None
    if count == 0:
        _log.info("GPU metrics off: NVML sees no GPU")
        return None
    _log.info("GPU metrics on: %d GPU(s)", count)
    return GpuCollector(nvml)


def _safe(reading: Callable[[], Any], default: Any) -> Any:
    try:
        return reading()
    except Exception:  # noqa: BLE001
        return default


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
