"""Filters that turn lspci and nvidia-smi output into Cluster AI's GPU facts."""

from __future__ import annotations

import shlex
from typing import Any

NVIDIA_VENDOR = "10de"
# PCI classes of GPUs: VGA compatible controller and 3D controller. The same cards also
# show an audio function (0403) and USB-C controllers (0c03), which are not GPUs.
GPU_CLASSES = {"0300", "0302"}


def nvidia_pci_gpus(lines: list[str]) -> list[dict[str, str]]:
    """NVIDIA GPUs in ``lspci -D -mm -n`` output: one dict per GPU with its address and ids.

    A line looks like ``0000:01:00.0 "0300" "10de" "2684" -ra1 "1043" "88e2"``.
    """
    gpus = []
    for line in lines:
        fields = shlex.split(line)
        if len(fields) < 4:
            continue
        slot, pci_class, vendor, device = fields[:4]
        if vendor.lower() == NVIDIA_VENDOR and pci_class[:4] in GPU_CLASSES:
            gpus.append({"slot": slot, "class": pci_class[:4], "device_id": device.lower()})
    return gpus


def nvidia_smi_gpus(lines: list[str]) -> list[dict[str, Any]]:
    """Parse ``nvidia-smi --query-gpu=index,name,memory.total,driver_version,uuid
    --format=csv,noheader,nounits``: one dict per GPU."""
    gpus = []
    for line in lines:
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 5 or not fields[0].isdigit():
            continue
        index, name, memory, driver, uuid = fields
        gpus.append(
            {
                "index": int(index),
                "name": name,
                "memory_mib": int(memory) if memory.isdigit() else 0,
                "driver_version": driver,
                "uuid": uuid,
            }
        )
    return gpus


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"nvidia_pci_gpus": nvidia_pci_gpus, "nvidia_smi_gpus": nvidia_smi_gpus}
