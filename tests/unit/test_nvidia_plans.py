"""Which driver and CUDA packages and repositories each platform gets.

The filters in plugins/filter/clusterai_nvidia.py choose from the data shipped in
roles/nvidia_driver/vars/main.yml; these tests load that real data.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("nvidia", REPO / "plugins/filter/clusterai_nvidia.py")
assert spec and spec.loader
nvidia = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nvidia)

PLATFORMS: dict[str, Any] = yaml.safe_load(
    (REPO / "roles/nvidia_driver/vars/main.yml").read_text()
)["_nvidia_driver_platforms"]
DEFAULTS = yaml.safe_load((REPO / "roles/nvidia_driver/defaults/main.yml").read_text())
BASE = DEFAULTS["nvidia_driver_cuda_repo_base_url"]


def host(distribution: str, major: str, family: str, arch: str = "x86_64") -> dict[str, str]:
    return {
        "distribution": distribution,
        "distribution_major_version": major,
        "os_family": family,
        "architecture": arch,
    }


DEBIAN = host("Debian", "12", "Debian")
UBUNTU22 = host("Ubuntu", "22", "Debian")
UBUNTU24 = host("Ubuntu", "24", "Debian", "aarch64")
ROCKY = host("Rocky", "9", "RedHat")


def plan(h: dict[str, str], source: str = "auto", desktop: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = nvidia.nvidia_driver_plan(PLATFORMS, h, "550", source, desktop)
    return result


def test_debian_gets_its_own_driver_from_non_free() -> None:
    chosen = plan(DEBIAN)
    assert chosen["source"] == "distro"
    assert chosen["branch"] == "535"
    assert chosen["apt_components"] == ["contrib", "non-free", "non-free-firmware"]
    assert chosen["packages"] == ["nvidia-driver", "firmware-misc-nonfree", "linux-headers-amd64"]
    assert chosen["initramfs_command"] == ["update-initramfs", "-u"]


def test_ubuntu_servers_get_the_headless_server_driver_of_the_pinned_branch() -> None:
    chosen = plan(UBUNTU22)
    assert (chosen["source"], chosen["packager"]) == ("distro", "apt")
    assert chosen["packages"] == ["nvidia-headless-550-server", "nvidia-utils-550-server"]
    assert chosen["apt_components"] == []


def test_ubuntu_desktops_get_the_full_distribution_driver() -> None:
    assert plan(UBUNTU24, desktop=True)["packages"] == ["nvidia-driver-550"]
    # Even when the site prefers NVIDIA's repository for its servers.
    assert plan(UBUNTU24, source="cuda_repo", desktop=True)["source"] == "distro"


def test_the_cuda_repository_can_be_chosen_on_debian_and_ubuntu() -> None:
    for h in (DEBIAN, UBUNTU22):
        chosen = plan(h, source="cuda_repo")
        assert chosen["source"] == "cuda_repo"
        assert chosen["packages"] == ["cuda-drivers-550"]
        assert chosen["apt_components"] == []


def test_rhel_rebuilds_use_the_cuda_repository_module_stream() -> None:
    chosen = plan(ROCKY)
    assert (chosen["source"], chosen["packager"]) == ("cuda_repo", "dnf")
    assert chosen["dnf_module"] == "nvidia-driver:550-dkms"
    assert chosen["packages"] == []
    assert chosen["initramfs_command"] == ["dracut", "--force"]


def test_repository_urls_and_keys_per_platform() -> None:
    assert nvidia.cuda_repository(PLATFORMS, DEBIAN, BASE) == {
        "kind": "apt",
        "url": f"{BASE}/debian12/x86_64/",
        "key_url": f"{BASE}/debian12/x86_64/3bf863cc.pub",
        "key_fingerprint": "EB693B3035CD5710E231E123A4B469963BF863CC",
    }
    assert nvidia.cuda_repository(PLATFORMS, UBUNTU24, BASE)["url"] == f"{BASE}/ubuntu2404/sbsa/"
    rocky = nvidia.cuda_repository(PLATFORMS, ROCKY, BASE)
    assert (rocky["kind"], rocky["url"]) == ("dnf", f"{BASE}/rhel9/x86_64/")
    assert rocky["key_url"].endswith("/rhel9/x86_64/D42D0685.pub")


@pytest.mark.parametrize(
    ("h", "source", "desktop", "message"),
    [
        (
            host("Ubuntu", "20", "Debian"),
            "auto",
            False,
            "nvidia_driver: Ubuntu 20 is not supported (Ubuntu versions known: 22, 24)",
        ),
        (
            host("Archlinux", "0", "Archlinux"),
            "auto",
            False,
            "nvidia_driver: Archlinux (Archlinux family) is not supported"
            " (known: Debian, RedHat, Ubuntu)",
        ),
        (
            ROCKY,
            "distro",
            False,
            "nvidia_driver: source distro is not available on Rocky 9"
            " (choose one of: auto, cuda_repo)",
        ),
        (
            ROCKY,
            "auto",
            True,
            "nvidia_driver: Rocky 9 has no distribution driver for a desktop host",
        ),
    ],
)
def test_unsupported_choices_say_why(
    h: dict[str, str], source: str, desktop: bool, message: str
) -> None:
    with pytest.raises(
        AnsibleFilterError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        plan(h, source, desktop)


def test_an_unknown_architecture_has_no_cuda_repository() -> None:
    with pytest.raises(AnsibleFilterError, match="architecture ppc64le is not supported"):
        nvidia.cuda_repository(PLATFORMS, host("Debian", "12", "Debian", "ppc64le"), BASE)


def test_the_toolkit_package_is_the_pinned_release() -> None:
    assert nvidia.cuda_toolkit_packages("12.4") == ["cuda-toolkit-12-4"]
    with pytest.raises(AnsibleFilterError, match=r"version 12 is not MAJOR\.MINOR"):
        nvidia.cuda_toolkit_packages("12")
