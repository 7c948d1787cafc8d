# Copyright: Cluster AI contributors
# Apache License 2.0
"""Action ``clusterai_service_removal``: a service taken off a host in one task, the way
the internal ``service_removal`` role's tasks did it one by one.

Its units are stopped and disabled (``ansible.builtin.systemd_service``; a unit the host
does not have is skipped). With ``wipe`` also its packages purged (``clusterai_apt``),
its paths deleted (``ansible.builtin.file``), its users and their groups removed
(``ansible.builtin.user``, ``ansible.builtin.group``) and systemd told to forget deleted
units (a daemon reload). Every step is the same module with the same arguments those tasks
ran, so check mode, diff mode and what counts as a change are those modules'.

Why one task: Ansible's controller pays for every task on every host (a worker process,
the task's variables, its callbacks), about as much for a task it skips as for one it runs.
``reset.yml`` takes fourteen roles off each host: six tasks a role made that some 340
tasks on three hosts, as costly as converging ``site.yml``; the modules themselves are
quick.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

SPEC: dict[str, dict[str, Any]] = {
    "units": {"type": "list", "elements": "str", "default": []},
    "packages": {"type": "list", "elements": "str", "default": []},
    "paths": {"type": "list", "elements": "str", "default": []},
    "users": {"type": "list", "elements": "str", "default": []},
    "wipe": {"type": "bool", "default": False},
}
# systemd_service's words for a unit the host does not have: nothing to stop.
NO_UNIT = "Could not find the requested service"


def plan(args: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The steps in order: what each is called in the result, its module, its arguments."""
    steps = [
        (f"stop {unit}", "ansible.builtin.systemd_service",
         {"name": unit, "state": "stopped", "enabled": False})
        for unit in args["units"]
    ]  # fmt: skip
    if not args["wipe"]:
        return steps
    if args["packages"]:
        steps.append(
            ("purge " + ", ".join(args["packages"]), "clusterai_apt",
             {"name": args["packages"], "state": "absent", "purge": True})
        )  # fmt: skip
    steps += [(f"delete {p}", "ansible.builtin.file", {"path": p, "state": "absent"})
              for p in args["paths"]]  # fmt: skip
    steps += [(f"remove user {u}", "ansible.builtin.user", {"name": u, "state": "absent"})
              for u in args["users"]]  # fmt: skip
    steps += [(f"remove group {u}", "ansible.builtin.group", {"name": u, "state": "absent"})
              for u in args["users"]]  # fmt: skip
    steps.append(("reload systemd", "ansible.builtin.systemd_service", {"daemon_reload": True}))
    return steps


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(SPEC)

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=SPEC)
        done: list[dict[str, Any]] = []
        for name, module, module_args in plan(args):
            answer = self._step(module, module_args, task_vars or {})
            if answer.get("failed") and not (
                module_args.get("state") == "stopped" and NO_UNIT in str(answer.get("msg", ""))
            ):
                raise AnsibleActionFail(
                    f"{name}: {answer.get('msg', 'failed')}",
                    result={"steps": done, "failed_step": answer},
                )
            done.append({"step": name, "changed": bool(answer.get("changed"))})
        result.update(changed=any(d["changed"] for d in done), steps=done)
        return result

    def _step(
        self, module: str, module_args: dict[str, Any], task_vars: dict[str, Any]
    ) -> dict[str, Any]:
        if module != "clusterai_apt":
            return dict(self._execute_module(module, module_args=module_args, task_vars=task_vars))
        # The package action (dpkg's status first, apt only when something is installed),
        # run as the template action runs the copy action.
        task = self._task.copy()
        task.args = module_args
        action = self._shared_loader_obj.action_loader.get(
            "clusterai_apt",
            task=task,
            connection=self._connection,
            play_context=self._play_context,
            loader=self._loader,
            templar=self._templar,
            shared_loader_obj=self._shared_loader_obj,
        )
        return dict(action.run(task_vars=task_vars))
