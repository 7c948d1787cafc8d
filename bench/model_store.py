#!/usr/bin/env python3
"""Bench: a model reaching N workers through the control host's model store, against N
outside downloads (each worker fetching from the registry itself).

Brings up its own 3-host sandbox (ctl1 and two workers, in a temporary state directory,
so your sandboxes are untouched), installs the Ollama role on the workers (its release is
the test fixture tests/fixtures/fake_ollama.py, packed as the release is) and the
model_store role on ctl1. The outside registry is the stand-in tests/fixtures/
fake_registry.py on this machine's loopback, its answers paced to ``--link-mbit`` per
second in all (one outside link, shared by every download at once); the LAN between the
sandbox hosts is this machine's loopback, not paced.

Each round puts a fresh model (``--size-mib``, made up, never seen before) on both workers
with playbooks/models.yml twice, once per way:

- store: ``clusterai_model_store: true``; the store fetches the model once, the workers
  fetch it from the store (playbooks/models.yml's ollama_model, blobs checked by SHA-256,
  pushed to Ollama's /api/blobs, made with /api/create);
- direct: the same module and steps with the registry itself as its source
  (``ollama_model_store_url``), as two workers each pulling from the outside would.

It prints each way's wall time of the playbook run (its start, about the same for both,
included: a run with nothing to fetch is printed too) and the bytes that crossed the
outside link, and the ratios. Not a test: timings never gate CI. Needs root and the
sandbox tools.

    .venv/bin/python bench/model_store.py [--rounds 2] [--size-mib 64] [--link-mbit 100]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures import fake_ollama, fake_registry  # noqa: E402
from tests.helpers import ansible_playbook, run_cli, serve_folder  # noqa: E402

WAYS = ("store", "direct")


def clusterai(*args: str) -> str:
    done = run_cli(*args, timeout=1800)
    if done.code != 0:
        sys.exit(f"error: bench: clusterai {' '.join(args[:2])}: {done.stderr[-3000:]}")
    return done.stdout


def playbook(inventory: Path, path: str | Path, **extra: Any) -> float:
    """Run a playbook; its wall time (a failure ends the bench with its output)."""
    started = time.perf_counter()
    done = ansible_playbook(inventory, path, "-e", json.dumps(extra))
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"error: bench: {path}: {done.stdout[-3000:]}")
    return elapsed


def cluster(scratch: Path, upstream: str, archive: dict[str, str]) -> Path:
    """The sandbox's inventory with the store on and both workers on Ollama, converged."""
    status = json.loads(clusterai("sandbox", "up", "--hosts", "3", "--name", "bench-store",
                                  "--json"))  # fmt: skip
    inventory = yaml.safe_load(Path(status["inventory"]).read_text())
    inventory["all"]["vars"].update(
        clusterai_model_store=True, model_store_upstream=upstream,
        ollama_archive_url=archive["url"], ollama_archive_sha256=archive["sha256"],
        ollama_controller_cache=str(scratch / "cache"),
    )  # fmt: skip
    for worker in inventory["all"]["children"]["workers"]["hosts"].values():
        worker["clusterai_inference_backend"] = "ollama"
    path = scratch / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    path.chmod(0o600)
    playbook(path, REPO / "tests" / "integration" / "ollama_role.yml")
    playbook(path, REPO / "tests" / "integration" / "model_store_role.yml")
    return path


def one_round(
    inventory: Path, registry: fake_registry.Registry, upstream: str, size: int, n: int
) -> dict[str, float]:
    row: dict[str, float] = {}
    for way in WAYS:
        name = f"bench{n}-{way}"
        registry.add(f"library/{name}", "1b", size)
        before = registry.sent("/blobs/")
        extra: dict[str, Any] = {"ollama_models": [f"{name}:1b"]}
        if way == "direct":
            extra["ollama_model_store_url"] = upstream
        row[way] = playbook(inventory, "models.yml", **extra)
        row[f"{way} MiB out"] = (registry.sent("/blobs/") - before) / (1 << 20)
    row["nothing to fetch"] = playbook(inventory, "models.yml",
                                       ollama_models=[f"bench{n}-store:1b"])  # fmt: skip
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--link-mbit", type=float, default=100.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: bench: needs root (the sandbox boots hosts)", file=sys.stderr)
        return 2
    registry = fake_registry.Registry(rate=args.link_mbit * 1e6 / 8)
    rows: list[dict[str, float]] = []
    columns = ("store", "direct", "nothing to fetch", "store MiB out", "direct MiB out")
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        state = scratch / "state"
        os.environ.update({
            "CLUSTERAI_STATE_DIR": str(state),
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(state / "ansible-facts"),
        })  # fmt: skip
        release = scratch / "release"
        release.mkdir()
        path = fake_ollama.release_archive(release)
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            with serve_folder(release) as base, fake_registry.in_thread(registry) as upstream:
                archive = {"url": f"{base}/ollama-linux-ARCH.tgz", "sha256": sha256}
                inventory = cluster(scratch, upstream, archive)
                link = f"{args.link_mbit:g} Mbit/s"
                print(f"a {args.size_mib} MiB model onto 2 workers, outside link {link};"
                      " seconds, and MiB over the outside link")  # fmt: skip
                print("  ".join(f"{c:>16}" for c in columns))
                for n in range(args.rounds):
                    row = one_round(inventory, registry, upstream, args.size_mib << 20, n)
                    rows.append(row)
                    print("  ".join(f"{row[c]:16.1f}" for c in columns), flush=True)
        finally:
            clusterai("sandbox", "down", "--name", "bench-store")
    if rows:
        median = {c: statistics.median(r[c] for r in rows) for c in columns}
        print("median: " + ", ".join(f"{c} {v:.1f}" for c, v in median.items()))
        print(f"direct / store: time {median['direct'] / median['store']:.2f}x, outside bytes"
              f" {median['direct MiB out'] / median['store MiB out']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
