# Copyright: Cluster AI contributors
# Apache License 2.0
"""Filters that pick NVIDIA driver and CUDA packages and repositories for a host.

The data lives in ``roles/nvidia_driver/vars/main.yml``: per distribution (or OS family, for RHEL's
rebuilds) and major version, which sources exist and what each installs. These filters
only choose from it, so the choice is unit-tested against the shipped data
(tests/unit/test_nvidia_plans.py) on machines without a GPU.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

# Ansible's architecture name to the one NVIDIA's repository paths use.
CUDA_REPO_ARCH = {"x86_64": "x86_64", "aarch64": "sbsa"}
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _platform(platforms: dict[str, Any], host: dict[str, Any], role: str) -> dict[str, Any]:
    """The data entry for this host: by distribution first, then by OS family."""
    version = str(host["distribution_major_version"])
    for key in (host["distribution"], host["os_family"]):
        if key in platforms:
            entry = platforms[key].get(version)
            if entry is None:
                known = ", ".join(sorted(platforms[key]))
                raise AnsibleFilterError(
                    f"{role}: {host['distribution']} {version} is not supported"
                    f" ({key} versions known: {known})"
                )
            return dict(entry)
    known = ", ".join(sorted(platforms))
    raise AnsibleFilterError(
        f"{role}: {host['distribution']} ({host['os_family']} family) is not supported"
        f" (known: {known})"
    )


def _fill(values: list[str], **fields: str) -> list[str]:
    return [value.format(**fields) for value in values]


def cuda_repository(
    platforms: dict[str, Any], host: dict[str, Any], base_url: str
) -> dict[str, Any]:
    """NVIDIA's CUDA repository for this host: its URL, kind (apt/dnf) and key."""
    entry = _platform(platforms, host, "cuda repository")
    repo = entry.get("cuda_repo")
    if not repo:
        raise AnsibleFilterError(
            f"cuda repository: NVIDIA publishes no CUDA repository for"
            f" {host['distribution']} {host['distribution_major_version']}"
        )
    arch = CUDA_REPO_ARCH.get(host["architecture"])
    if arch is None:
        raise AnsibleFilterError(
            f"cuda repository: architecture {host['architecture']} is not supported"
            f" (supported: {', '.join(CUDA_REPO_ARCH)})"
        )
    url = f"{base_url.rstrip('/')}/{repo['name']}/{arch}/"
    return {
        "kind": entry["packager"],
        "url": url,
        "key_url": url + repo["key"],
        "key_fingerprint": repo.get("key_fingerprint", ""),
    }


def nvidia_driver_plan(
    platforms: dict[str, Any],
    host: dict[str, Any],
    branch: str,
    source: str,
    desktop: bool,
) -> dict[str, Any]:
    """What installs the driver on this host.

    ``source`` is ``auto``, ``distro`` or ``cuda_repo``; ``auto`` takes the first the
    platform lists. Desktops always get the distribution's driver, which keeps the
    display stack the desktop was built with.
    """
    entry = _platform(platforms, host, "nvidia_driver")
    sources = entry["sources"]
    if desktop:
        if "distro" not in sources:
            raise AnsibleFilterError(
                f"nvidia_driver: {host['distribution']} {host['distribution_major_version']}"
                " has no distribution driver for a desktop host (move the host out of the"
                " desktop group to use NVIDIA's CUDA repository)"
            )
        chosen = "distro"
    elif source == "auto":
        chosen = sources[0]
    elif source in sources:
        chosen = source
    else:
        raise AnsibleFilterError(
            f"nvidia_driver: source {source} is not available on {host['distribution']}"
            f" {host['distribution_major_version']} (choose one of: auto, {', '.join(sources)})"
        )
    method = entry[chosen]
    pinned = str(method.get("branch") or branch)
    fields = {"branch": pinned, "deb_arch": DEBIAN_ARCH.get(host["architecture"], "")}
    packages = method.get("packages_desktop" if desktop else "packages", method.get("packages", []))
    return {
        "source": chosen,
        "packager": entry["packager"],
        "branch": pinned,
        "apt_components": list(method.get("apt_components", [])),
        "packages": _fill(list(packages), **fields),
        "dnf_module": method.get("dnf_module", "").format(**fields),
        "initramfs_command": list(entry["initramfs_command"]),
    }


def cuda_toolkit_packages(version: str) -> list[str]:
    """The package of a pinned CUDA toolkit release in NVIDIA's CUDA repository; the same
    name on apt and dnf."""
    major, _, minor = str(version).partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise AnsibleFilterError(f"cuda_toolkit: version {version} is not MAJOR.MINOR, e.g. 12.4")
    return [f"cuda-toolkit-{major}-{minor}"]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "cuda_repository": cuda_repository,
            "nvidia_driver_plan": nvidia_driver_plan,
            "cuda_toolkit_packages": cuda_toolkit_packages,
        }
