"""Which hosts the in-process SSH client takes, and with which files and keys."""

from __future__ import annotations

import os

from clusterai_runner.adapters.inventory import InventoryHost
from clusterai_runner.adapters.ssh import options_for


def host(*ssh_args: str, key_file: str | None = "/keys/id") -> InventoryHost:
    return InventoryHost(
        name="w1", groups=("workers",), host="192.0.2.5", port=22, user="admin",
        key_file=key_file, ssh_args=ssh_args, address="192.0.2.5",
    )  # fmt: skip


def test_the_usual_options_are_understood() -> None:
    options = options_for(host(
        "-o", "UserKnownHostsFile=/inv/known_hosts /inv/more", "-o", "StrictHostKeyChecking=yes",
        "-oIdentitiesOnly=yes", "-C", "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
        "-i", "/keys/other",
    ))  # fmt: skip
    assert options is not None
    assert options.known_hosts[:2] == ("/inv/known_hosts", "/inv/more")
    assert options.client_keys == ("/keys/id", "/keys/other")
    assert options.use_agent is False


def test_without_options_openssh_defaults_apply() -> None:
    options = options_for(host(key_file=None))
    assert options is not None
    assert options.known_hosts[0] == os.path.expanduser("~/.ssh/known_hosts")
    assert options.client_keys is None and options.use_agent is True


def test_options_only_openssh_knows_send_the_host_to_openssh() -> None:
    for args in (
        ("-o", "ProxyCommand=ssh -W %h:%p bastion"),
        ("-o", "ProxyJump=bastion"),
        ("-J", "bastion"),
        ("-F", "/etc/ssh/other_config"),
        ("-o", "Ciphers=aes128-ctr"),
        ("-o", "HostKeyAlias=gpu1"),
    ):
        assert options_for(host(*args)) is None, args
