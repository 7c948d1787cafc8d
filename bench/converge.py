#!/usr/bin/env python3
"""Bench: the idempotent re-run of site.yml, shipped ansible.cfg versus stock settings.

Brings up its own 3-host sandbox ("bench", in a temporary state directory, so your
sandboxes are untouched), converges it once, then alternates timed re-runs (which
change nothing) with the shipped ansible.cfg and with stock settings: a config that
only tells Ansible where the roles and plugins are. Prints the medians and the ratio.
Not a test: timings never gate CI. Needs root and the sandbox tools.

    sudo .venv/bin/python bench/converge.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STOCK_CONFIG = """\
[defaults]
roles_path = {repo}/roles
library = {repo}/plugins/modules
filter_plugins = {repo}/plugins/filter
lookup_plugins = {repo}/plugins/lookup
action_plugins = {repo}/plugins/action
inventory_plugins = {repo}/plugins/inventory
"""


def run(command: list[str], env: dict[str, str], idempotent: bool = True) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"error: bench: {' '.join(command[:2])} failed:\n{result.stdout[-2000:]}")
    changed = re.findall(r"changed=(\d+)", result.stdout.split("PLAY RECAP")[-1])
    if idempotent and any(count != "0" for count in changed):
        sys.exit("error: bench: the re-run changed something; it must be idempotent")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: bench: needs root (the sandbox boots hosts)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "CLUSTERAI_STATE_DIR": f"{scratch}/state", "ANSIBLE_NOCOLOR": "1"}
        up = subprocess.run(
            [str(BIN / "clusterai"), "sandbox", "up", "--hosts", "3", "--name", "bench", "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if up.returncode != 0:
            sys.exit(up.stderr)
        inventory = json.loads(up.stdout)["inventory"]
        stock = Path(scratch) / "stock.cfg"
        stock.write_text(STOCK_CONFIG.format(repo=REPO))
        configs = {"shipped ansible.cfg": str(REPO / "ansible.cfg"), "stock settings": str(stock)}
        playbook = [
            str(BIN / "ansible-playbook"),
            "-i",
            inventory,
            str(REPO / "playbooks/site.yml"),
        ]
        try:
            print("converging the bench sandbox once ...", file=sys.stderr)
            run(
                playbook,
                {**env, "ANSIBLE_CONFIG": configs["shipped ansible.cfg"]},
                idempotent=False,
            )
            times: dict[str, list[float]] = {name: [] for name in configs}
            for round_number in range(args.rounds):
                for name, config in configs.items():
                    seconds = run(playbook, {**env, "ANSIBLE_CONFIG": config})
                    times[name].append(seconds)
                    print(f"round {round_number + 1}: {name}: {seconds:.1f} s", file=sys.stderr)
        finally:
            subprocess.run(
                [str(BIN / "clusterai"), "sandbox", "down", "--name", "bench"],
                capture_output=True,
                env=env,
                check=False,
            )
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"idempotent re-run of site.yml on 3 sandbox hosts, median of {args.rounds}:")
    for name, median in medians.items():
        print(f"  {name:<20} {median:7.1f} s")
    ratio = medians["stock settings"] / medians["shipped ansible.cfg"]
    print(f"  stock / shipped      {ratio:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
