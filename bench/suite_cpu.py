#!/usr/bin/env python3
"""Bench: where the test suite's CPU time goes, per test module and per sandbox.

On 2 cores the suite keeps both CPUs busy from its first minute to its last, so its wall
time is its CPU time over two: only less CPU work makes it shorter. This runs the suite
(``make suite`` unless a command follows ``--``) in a cgroup of its own, each pytest-xdist
worker in a cgroup below it (bench/suite_cpu_plugin.py), and samples every sandbox host's
cgroup (clusterai-sandbox/..., where the hosts' servers, Mitogen's interpreters and apt
run) while it goes. Then prints the machine's busy share, the CPU time of the test
processes (the controller's side: Ansible, the CLI, local servers and clients) per module
and per test, and the hosts' CPU time per sandbox and per test. No competitor: the figures
are the suite's own, for choosing what to make cheaper. Needs root and cgroup v2 (the
sandbox's own needs).

    sudo .venv/bin/python bench/suite_cpu.py [--json FILE] [-- make suite PARALLEL=3]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clusterai_runner.sandbox import host  # noqa: E402


def cgroup2_mount() -> Path:
    mounts = host.cgroup2_mounts()
    if not mounts:
        sys.exit("error: bench: no cgroup v2 mount on this machine")
    return min(mounts)


def usage_s(cgroup: Path) -> float | None:
    try:
        with (cgroup / "cpu.stat").open() as stat:
            return int(stat.readline().split()[1]) / 1e6
    except OSError:
        return None


def busy_jiffies() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


class HostSampler(threading.Thread):
    """Every sandbox host's CPU time, the most its cgroup showed (it goes with the host);
    each host named by its root (SANDBOX/hosts/HOST), found from its systemd-nspawn."""

    def __init__(self, mount: Path) -> None:
        super().__init__(daemon=True)
        self.parent = mount / host.CGROUP_PARENT
        self.names: dict[Path, str] = {}
        self.roots: set[Path] = set()  # named already (host.cgroups reads mountinfo)
        self.seen: dict[Path, float] = {}
        # Each host's samples, and the pytest-xdist worker whose state directory holds it
        # (.../popen-gwN/...): a module's tests run one after another on one worker, so a
        # host's CPU time between a test's start and end is that test's.
        self.samples: dict[Path, list[tuple[float, float]]] = collections.defaultdict(list)
        self.workers: dict[Path, str] = {}
        self.before: dict[Path, float] = {}
        self.done = threading.Event()

    def name_hosts(self) -> None:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            for arg in args:
                if arg.startswith(b"--directory="):
                    root = Path(arg.split(b"=", 1)[1].decode())
                    if root in self.roots:
                        continue
                    self.roots.add(root)
                    label = "/".join(root.parts[-4:-1])  # SANDBOX/hosts/HOST
                    worker = next((p[6:] for p in root.parts if p.startswith("popen-")), "")
                    for cgroup in host.cgroups(root):
                        self.names.setdefault(cgroup, label.replace("/hosts/", "/"))
                        self.workers.setdefault(cgroup, worker)

    def run(self) -> None:
        # Hosts up before the run (the operator's sandboxes): only what they use from now.
        self.before = {c: usage_s(c) or 0.0 for c in self.parent.glob("*")}
        while not self.done.wait(2):
            self.name_hosts()
            for cgroup in self.parent.glob("*"):
                used = usage_s(cgroup)
                if used is not None:
                    self.seen[cgroup] = max(self.seen.get(cgroup, 0.0), used)
                    self.samples[cgroup].append((time.time(), self.seen[cgroup]))

    def during(self, worker: str, start: float, end: float) -> float:
        """The CPU time of the worker's hosts between two moments (2 s samples)."""

        def at(samples: list[tuple[float, float]], moment: float) -> float:
            return max((used for when, used in samples if when <= moment), default=0.0)

        return sum(
            at(samples, end) - at(samples, start)
            for cgroup, samples in self.samples.items()
            if self.workers.get(cgroup) == worker
        )

    def per_host(self) -> dict[str, float]:
        return {
            self.names.get(c, c.name): round(u - self.before.get(c, 0.0), 1)
            for c, u in self.seen.items()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("command", nargs="*", default=["make", "suite"])
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: bench: run as root (the sandbox and the cgroups need it)")
    mount = cgroup2_mount()
    run_cgroup = mount / f"clusterai-suite-cpu-{os.getpid()}"
    run_cgroup.mkdir()
    sampler = HostSampler(mount)
    sampler.start()
    busy0, total0 = busy_jiffies()
    started = time.time()
    log = Path(tempfile.mkstemp(prefix="suite-cpu-", suffix=".jsonl")[1])
    env = {
        **os.environ,
        "CLUSTERAI_SUITE_CPU": str(run_cgroup),
        "CLUSTERAI_SUITE_CPU_LOG": str(log),
        "PYTEST_ADDOPTS": f"{os.environ.get('PYTEST_ADDOPTS', '')} -p bench.suite_cpu_plugin",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    # Into the run's cgroup first, then the command (same PID): all it starts is counted.
    join = f'echo $$ > "{run_cgroup}/cgroup.procs" && exec "$@"'
    done = subprocess.run(["/bin/sh", "-c", join, "sh", *options.command], cwd=REPO, env=env)
    wall = time.time() - started
    busy1, total1 = busy_jiffies()
    sampler.done.set()
    sampler.join()
    tests = [json.loads(line) for line in log.open()]
    log.unlink()
    for test in tests:
        end = test["start"] + test["wall_s"]
        test["hosts_cpu_s"] = round(sampler.during(test["worker"], test["start"], end), 1)
    run_cpu = usage_s(run_cgroup) or 0.0  # its workers' cgroups included (cgroup v2)
    for worker in [c for c in run_cgroup.iterdir() if c.is_dir()]:
        worker.rmdir()  # its processes are gone with the run
    run_cgroup.rmdir()

    modules: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for test in tests:
        module = modules[test["test"].split("::", 1)[0]]
        module[0] += test["cpu_s"]
        module[1] += test["wall_s"]
        module[2] += 1
    sandboxes: dict[str, float] = collections.defaultdict(float)
    hosts = sampler.per_host()
    for name, used in hosts.items():
        sandboxes[name.split("/", 1)[0]] += used
    cores = os.cpu_count() or 1
    print(f"suite: exit {done.returncode}, {wall:.0f} s, the {cores} CPUs "
          f"{(busy1 - busy0) / max(total1 - total0, 1):.0%} busy")  # fmt: skip
    in_tests = sum(t["cpu_s"] for t in tests)
    print(f"CPU time: the test processes {run_cpu:.0f} s ({in_tests:.0f} s of it in tests), "
          f"the sandbox hosts {sum(hosts.values()):.0f} s")  # fmt: skip
    print("\nthe test processes, per module (CPU s, wall s, tests):")
    for name, (cpu, spent, count) in sorted(modules.items(), key=lambda m: -m[1][0])[:25]:
        print(f"  {cpu:7.1f} {spent:7.1f} {count:4.0f}  {name}")
    print("\nthe sandbox hosts, per sandbox (CPU s):")
    for name, used in sorted(sandboxes.items(), key=lambda s: -s[1]):
        print(f"  {used:7.1f}  {name}")
    print("\nthe tests that cost the most (CPU s: theirs, their sandbox hosts'; wall s):")
    for test in sorted(tests, key=lambda t: -t["cpu_s"] - t["hosts_cpu_s"])[:25]:
        print(f"  {test['cpu_s']:7.1f} {test['hosts_cpu_s']:7.1f} {test['wall_s']:7.1f}"
              f"  {test['test'][:100]}")  # fmt: skip
    if options.json:
        figures: dict[str, Any] = {
            "exit": done.returncode, "wall_s": round(wall, 1), "run_cpu_s": round(run_cpu, 1),
            "busy": round((busy1 - busy0) / max(total1 - total0, 1), 3),
            "tests": tests, "hosts": hosts,
        }  # fmt: skip
        options.json.write_text(json.dumps(figures, indent=1) + "\n")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
