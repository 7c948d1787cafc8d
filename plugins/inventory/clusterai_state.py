# Copyright: Cluster AI contributors
# Apache License 2.0
"""Ansible inventory plugin: the hosts the clusterai CLI recorded in its state store."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: clusterai_state
short_description: Hosts recorded in the Cluster AI state store
description:
  - Reads the hosts that C(clusterai scale-out) (and later C(clusterai cloud)) recorded in
    the state store, with their groups, address and connection variables.
  - Each host gets C(ansible_host) and C(clusterai_address) set to its recorded address,
    unless its recorded variables say otherwise.
  - Combine it with a static inventory to get the group variables, for example
    C(ansible-playbook -i inventories/prod -i clusterai_state.yml playbooks/site.yml).
  - The config file's name must end in C(clusterai_state.yml) or C(clusterai_state.yaml).
  - A store that does not exist yet gives no hosts; it is never created by this plugin.
version_added: "0.1.0"
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [clusterai_state]
  url:
    description:
      - SQLAlchemy URL of the state store.
      - Defaults to what the clusterai CLI uses, C(CLUSTERAI_STATE_URL) or
        C(sqlite:///$CLUSTERAI_STATE_DIR/state.db) (C($XDG_STATE_HOME/clusterai) by default).
    type: str
    env:
      - name: CLUSTERAI_STATE_URL
author:
  - Cluster AI contributors
"""

EXAMPLES = r"""
# clusterai_state.yml
plugin: clusterai_state
# Put every recorded host whose name starts with gpu in a group of its own.
groups:
  recorded_gpus: inventory_hostname.startswith('gpu')
"""

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from ansible.errors import AnsibleParserError  # noqa: E402
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable  # noqa: E402


class InventoryModule(BaseInventoryPlugin, Constructable):  # type: ignore[misc]
    NAME = "clusterai_state"

    def verify_file(self, path: str) -> bool:
        return bool(super().verify_file(path)) and path.endswith(
            ("clusterai_state.yml", "clusterai_state.yaml")
        )

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            from clusterai_runner.config import Settings
            from clusterai_runner.store import Store, StoreError
        except ImportError as exc:
            raise AnsibleParserError(
                f"{path}: the clusterai_state plugin needs the clusterai_runner package "
                "(install it into Ansible's Python: pip install -e .)"
            ) from exc
        url = self.get_option("url") or Settings.from_env().store_url
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
            return
        try:
            store = Store.open(url)
            hosts = store.hosts()
            store.close()
        except StoreError as exc:
            raise AnsibleParserError(f"{path}: {exc}") from exc
        strict = self.get_option("strict")
        for host in hosts:
            for group in host.groups:
                self.inventory.add_group(group)
            self.inventory.add_host(host.name, group=host.groups[0] if host.groups else None)
            for group in host.groups[1:]:
                self.inventory.add_child(group, host.name)
            variables = {
                "ansible_host": host.address,
                "clusterai_address": host.address,
                **host.variables,
            }
            for key, value in variables.items():
                self.inventory.set_variable(host.name, key, value)
            self._set_composite_vars(
                self.get_option("compose"), variables, host.name, strict=strict
            )
            self._add_host_to_composed_groups(
                self.get_option("groups"), variables, host.name, strict=strict
            )
            self._add_host_to_keyed_groups(
                self.get_option("keyed_groups"), variables, host.name, strict=strict
            )
