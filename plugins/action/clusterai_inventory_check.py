# Copyright: Cluster AI contributors
# Apache License 2.0
"""Action ``clusterai_inventory_check``: every check of one host's inventory variables in
one task (the ``validate_inventory`` role).

The checks were a dozen ``assert`` tasks, two of them looping over 11 and 16 variables:
every lifecycle playbook starts with them, and ``clusterai up`` runs them once more before
it opens the store. As tasks they cost the controller about 1.7 CPU-seconds for three
hosts (a worker process per task and host, a templating pass per loop item); as one
action, a tenth of that. The host's first problem is the task's failure message,
``inventory: host NAME: ...``, the same words the asserts had.

Arguments (the role's defaults and vars give them): ``backends`` (the catalogue,
``lookup('clusterai_backends')``), ``removed_variables`` (name: what to set instead),
``variable_types`` (name: list, dict, bool, int or str). The host's variables are read
from the task's variables, each templated when read (a vaulted value is decrypted then).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.json import AnsibleJSONEncoder
from ansible.plugins.action import ActionBase

IPV4 = re.compile(
    r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
)
TYPES: dict[str, Callable[[Any], bool]] = {
    "list": lambda v: isinstance(v, Sequence) and not isinstance(v, (str, bytes)),
    "dict": lambda v: isinstance(v, Mapping),
    "bool": lambda v: isinstance(v, bool),
    # Digits given on the command line (-e port=80) pass.
    "int": lambda v: not isinstance(v, bool) and re.match(r"^[0-9]+$", str(v)) is not None,
    "str": lambda v: isinstance(v, str),
}
VAULT_HINT = (
    'set {name}: "{{{{ vault_{name} }}}}" in group_vars/all, and the {what} in vault.yml, '
    "e.g. from `openssl rand -hex 24`"
)
MISSING = object()


def _is_ip(value: Any, loose_v6: bool) -> bool:
    text = str(value)
    if IPV4.match(text):
        return True
    if loose_v6:
        return ":" in text
    return ":" in text and re.match(r"^[0-9A-Fa-f:.]+$", text) is not None


def problems(
    host: str,
    is_worker: bool,
    get: Callable[[str], Any],
    backends: Mapping[str, Any],
    removed: Mapping[str, str],
    types: Mapping[str, str],
) -> list[str]:
    """What is wrong with ``host``'s variables (``get(name)`` gives a value or MISSING), in
    the order the checks run; empty when nothing is."""
    found: list[str] = []
    say = found.append
    where = f"inventory: host {host}:"
    address = get("clusterai_address")
    if address is MISSING:
        say(f"{where} clusterai_address is not set (set it to the address this host's "
            "services listen on, e.g. 192.0.2.10)")  # fmt: skip
    elif not _is_ip(address, loose_v6=False):
        say(f"{where} clusterai_address {address} is not an IP address (give the address "
            "this host's services listen on, e.g. 192.0.2.10)")  # fmt: skip
    known = ", ".join(backends)
    backend = get("clusterai_inference_backend")
    if is_worker and backend is MISSING:
        say(f"{where} clusterai_inference_backend is not set (set it to one of {known} in "
            "group_vars/all/inference.yml)")  # fmt: skip
    elif is_worker and not (isinstance(backend, str) and backend in backends):
        say(f"{where} clusterai_inference_backend {backend} is not one of {known}")
    for name, instead in removed.items():
        if get(name) is not MISSING:
            say(f"{where} {name} is not read by Cluster AI (set {instead} instead)")
    for name, kind in types.items():
        value = get(name)
        if value is not MISSING and not TYPES[kind](value):
            shown = json.dumps(value, cls=AnsibleJSONEncoder)  # as the to_json filter
            article = "an" if kind == "int" else "a"
            say(f"{where} {name} is {shown}, not {article} {kind} "
                "(see roles/*/README.md for the variable)")  # fmt: skip
    auth = backends.get(backend, {}).get("auth", "none") if isinstance(backend, str) else ""
    if is_worker and auth == "bearer":
        key = get("clusterai_backend_api_key")
        key = "" if key is MISSING else key
        if len(str(key)) < 16:
            state = "shorter than 16 characters" if key else "not set"
            hint = VAULT_HINT.format(name="clusterai_backend_api_key", what="key")
            say(f"{where} its {backend} server requires a key and clusterai_backend_api_key "
                f"is {state} ({hint})")  # fmt: skip
    loopback = get("clusterai_loopback_address")
    if loopback is not MISSING and not _is_ip(loopback, loose_v6=True):
        say(f"{where} clusterai_loopback_address {loopback} is not an IP address (leave it "
            "out: 127.0.0.1)")  # fmt: skip
    password = get("clusterai_monitoring_password")
    password = "" if password is MISSING else password
    if not 16 <= len(str(password)) <= 72:
        state = (
            "not set" if not password
            else "shorter than 16 characters" if len(str(password)) < 16
            else "longer than 72 characters"
        )  # fmt: skip
        hint = VAULT_HINT.format(name="clusterai_monitoring_password", what="password")
        say(f"{where} clusterai_monitoring_password is {state}: Prometheus, Alertmanager "
            f"and the exporters require a login ({hint})")  # fmt: skip
    return found


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        variables = task_vars or {}
        args = self._task.args
        for name in ("backends", "removed_variables", "variable_types"):
            if not isinstance(args.get(name), Mapping):
                raise AnsibleActionFail(f"clusterai_inventory_check: {name} must be a mapping")
        unknown = set(args["variable_types"].values()) - set(TYPES)
        if unknown:
            raise AnsibleActionFail(
                f"clusterai_inventory_check: unknown types {sorted(unknown)} "
                f"(known: {', '.join(TYPES)})"
            )

        read: dict[str, Any] = {}

        def get(name: str) -> Any:
            # Once per name: four are read by two checks (their type, then their value),
            # and templating a vaulted value decrypts it.
            if name not in read:
                read[name] = (
                    self._templar.template(variables[name]) if name in variables else MISSING
                )
            return read[name]

        host = variables["inventory_hostname"]
        workers = variables.get("groups", {}).get("workers", [])
        found = problems(
            host, host in workers, get, args["backends"], args["removed_variables"],
            args["variable_types"],
        )  # fmt: skip
        result["changed"] = False
        if found:
            result.update(failed=True, msg=found[0], problems=found)
        return result
