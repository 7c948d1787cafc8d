#!/usr/bin/env python3
"""Bench: making sandbox host roots with overlayfs (ours) versus copying the tree.

DESIGN.md's recipe copies the cached root file system once per host; the sandbox mounts
an overlay per host instead. This measures both on the same cached tree, in one run, for
N hosts, including a sync so that the copies' writes are counted, and prints the ratio.
Not a test: timings never gate CI. Needs root and a cached root file system
(`clusterai sandbox up` once).

    sudo .venv/bin/python bench/sandbox_hosts.py [--hosts 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from clusterai_runner.config import Settings
from clusterai_runner.sandbox import host, rootfs

MakeRoots = Callable[[Path, Path, int], None]


def overlay_roots(lower: Path, base: Path, count: int) -> None:
    for i in range(count):
        spec = host.HostSpec(f"h{i}", "127.0.0.1", f"bench-{i}", base / f"h{i}")
        host.mount(spec, lower)
        (spec.root / "etc/hostname").write_text(f"h{i}\n")


def copied_roots(lower: Path, base: Path, count: int) -> None:
    for i in range(count):
        subprocess.run(["cp", "-a", str(lower), str(base / f"h{i}")], check=True)
        (base / f"h{i}/etc/hostname").write_text(f"h{i}\n")


def timed(make: MakeRoots, lower: Path, count: int) -> float:
    with tempfile.TemporaryDirectory(dir=Settings.from_env().state_dir) as scratch:
        base = Path(scratch)
        start = time.perf_counter()
        make(lower, base, count)
        os.sync()
        elapsed = time.perf_counter() - start
        host.remove_tree(base)
        base.mkdir()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lower = rootfs.cached_path(Settings.from_env().cache_dir)
    if os.geteuid() != 0 or not lower.is_dir():
        print(
            "error: bench: needs root and a cached root file system "
            "(run `sudo clusterai sandbox up` once)",
            file=sys.stderr,
        )
        return 2
    Settings.from_env().state_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[float]] = {"overlay (ours)": [], "copy (cp -a)": []}
    for _ in range(args.rounds):
        results["overlay (ours)"].append(timed(overlay_roots, lower, args.hosts))
        results["copy (cp -a)"].append(timed(copied_roots, lower, args.hosts))
    print(f"making {args.hosts} host roots from {lower}, median of {args.rounds} rounds:")
    medians = {name: statistics.median(times) for name, times in results.items()}
    for name, median in medians.items():
        print(f"  {name:<16} {median:8.3f} s")
    ratio = medians["copy (cp -a)"] / max(medians["overlay (ours)"], 1e-9)
    print(f"  copy / overlay   {ratio:8.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
