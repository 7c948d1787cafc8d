"""A local cluster of real Debian hosts: systemd-nspawn containers on loopback addresses."""

from clusterai_runner.sandbox.core import DEFAULT_NAME, Sandboxes, SandboxStatus

__all__ = ["DEFAULT_NAME", "SandboxStatus", "Sandboxes"]
