"""The GPU filters on real output shapes of lspci and nvidia-smi."""

import importlib.util

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location(
    "gpu", REPO / "roles/gpu_facts/filter_plugins/clusterai_gpu.py"
)
assert spec and spec.loader
gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu)

# A workstation: an RTX 4090 (VGA + its audio function), an Intel iGPU, an NVMe drive.
WORKSTATION = [
    '0000:00:02.0 "0300" "8086" "a780" -r04 "1043" "8882"',
    '0000:01:00.0 "0300" "10de" "2684" -ra1 "1043" "88e2"',
    '0000:01:00.1 "0403" "10de" "22ba" -ra1 "1043" "88e2"',
    '0000:02:00.0 "0108" "144d" "a80c" -p02 "144d" "a801"',
]
# A server: two data-centre GPUs, which are 3D controllers, and an NVIDIA NVSwitch bridge.
SERVER = [
    '0000:07:00.0 "0302" "10de" "20b2" -ra1 "10de" "1463"',
    '0000:0f:00.0 "0302" "10de" "20b2" -ra1 "10de" "1463"',
    '0000:c1:00.0 "0680" "10de" "1af1" -ra1 "10de" "0000"',
]


def test_counts_only_nvidia_display_and_3d_controllers() -> None:
    assert gpu.nvidia_pci_gpus(WORKSTATION) == [
        {"slot": "0000:01:00.0", "class": "0300", "device_id": "2684"}
    ]
    assert [g["slot"] for g in gpu.nvidia_pci_gpus(SERVER)] == ["0000:07:00.0", "0000:0f:00.0"]
    assert gpu.nvidia_pci_gpus([]) == []
    assert gpu.nvidia_pci_gpus(["garbage", ""]) == []


def test_nvidia_smi_csv() -> None:
    lines = [
        "0, NVIDIA A100-SXM4-80GB, 81920, 550.54.15, GPU-0f3c",
        "1, NVIDIA A100-SXM4-80GB, 81920, 550.54.15, GPU-9a21",
        "",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
    ]
    assert gpu.nvidia_smi_gpus(lines) == [
        {
            "index": 0,
            "name": "NVIDIA A100-SXM4-80GB",
            "memory_mib": 81920,
            "driver_version": "550.54.15",
            "uuid": "GPU-0f3c",
        },
        {
            "index": 1,
            "name": "NVIDIA A100-SXM4-80GB",
            "memory_mib": 81920,
            "driver_version": "550.54.15",
            "uuid": "GPU-9a21",
        },
    ]
    assert gpu.nvidia_smi_gpus(["0, Tesla T4, [N/A], 535.1, GPU-1"])[0]["memory_mib"] == 0
