# Copyright: Cluster AI contributors
# Apache License 2.0
"""Action ``clusterai_apt``: ``ansible.builtin.apt``, answered from dpkg's status when no
package needs a change.

The apt module loads the whole package cache (and then runs ``apt-mark manual``, which
loads it again) for every task, even when every package is installed already: about
0.3 CPU-seconds on the host per task, the largest single cost of a converge that changes
nothing. This action first reads dpkg's status of the named packages and apt's list of
automatically installed ones (one ``dpkg-query`` and one ``cat``, a few milliseconds); when
that shows the task would change nothing, it returns ``changed: false`` without running
apt. Otherwise, and for any argument it does not read (``deb``, ``upgrade``,
``update_cache``, version pins, wildcards, ...), it runs ``ansible.builtin.apt`` with the
task's arguments unchanged: the outcome is always the apt module's.

"Would change nothing" is what apt itself would decide: for ``state: present`` every
package installed and none marked as automatically installed (apt marks it manual); for
``state: absent`` none installed, and with ``purge`` none with its configuration left.
"""

from __future__ import annotations

import re
from typing import Any

from ansible.plugins.action import ActionBase

# Arguments the fast path understands; any other sends the task to the apt module.
READ = frozenset({"name", "pkg", "package", "state", "purge", "install_recommends"})
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
MARKER = "--clusterai-apt-extended-states--"


def package_names(args: dict[str, Any]) -> list[str] | None:
    """The task's package names when the fast path can answer for it, else None."""
    if not set(args) <= READ or args.get("state", "present") not in ("present", "absent"):
        return None
    names = args.get("name", args.get("pkg", args.get("package")))
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    if not isinstance(names, list) or not names:
        return None
    if not all(isinstance(n, str) and PACKAGE.match(n) for n in names):
        return None
    return names


def parse(stdout: str) -> tuple[dict[str, str], set[str]]:
    """dpkg's status letters per package, and the packages apt installed automatically."""
    status_part, _, extended = stdout.partition(MARKER)
    status: dict[str, str] = {}
    for line in status_part.splitlines():
        package, _, abbrev = line.partition("\t")
        if package:
            # One line per architecture installed: any line that is installed counts.
            current = status.get(package, "")
            status[package] = abbrev if abbrev[1:2] == "i" else current or abbrev
    automatic: set[str] = set()
    for block in extended.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.strip().splitlines() if ": " in line)
        if fields.get("Auto-Installed") == "1" and "Package" in fields:
            automatic.add(fields["Package"])
    return status, automatic


def settled(args: dict[str, Any], names: list[str], status: dict[str, str],
            automatic: set[str]) -> bool:  # fmt: skip
    """Whether apt would change nothing for this task, as dpkg's status shows."""
    # Status-Abbrev: desired action, current state, error flag; "ii " is installed.
    if args.get("state", "present") == "present":
        return all(status.get(n, "")[1:3] == "i " and n not in automatic for n in names)
    left = ("n",) if args.get("purge") else ("n", "c")
    return all(status.get(n, " n")[1:2] in left for n in names)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        names = package_names(args)
        if names is not None:
            # Each name matched PACKAGE: nothing in them for the shell to expand.
            listed = " ".join(names)
            query = self._low_level_execute_command(
                f"dpkg-query -W -f='${{Package}}\\t${{db:Status-Abbrev}}\\n' -- {listed}"
                f" 2>/dev/null; echo {MARKER}; cat /var/lib/apt/extended_states 2>/dev/null;"
                " true"
            )
            if query.get("rc") == 0 and MARKER in query.get("stdout", ""):
                status, automatic = parse(query["stdout"])
                if settled(args, names, status, automatic):
                    result.update(changed=False, clusterai_apt="dpkg shows nothing to change")
                    return result
        result.update(
            self._execute_module("ansible.builtin.apt", module_args=args, task_vars=task_vars)
        )
        return result
