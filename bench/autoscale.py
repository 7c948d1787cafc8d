#!/usr/bin/env python3
"""Bench: from a step up in load to a standby worker serving, through `clusterai autoscale`.

Brings up its own cluster (a 3-host sandbox in a temporary state directory, so your
sandboxes are untouched: ctl1, worker1 serving, worker2 a parked standby worker) and
converges it with `clusterai up` (site.yml prepares worker2 with the base roles and leaves
its server off). The autoscaler runs in this process through the use case (`run`, a 2 s
interval, scale-out after 4 s of pressure). Each round starts eight clients streaming
chats through the gateway with the official openai client (worker1 answers four at once:
the queue waits), and splits the time from that step to worker2's first answer:

- decision: until the autoscaler decides to start worker2 (the pressure seen, its delay);
- converge: `scale.unpark` (preflight and scale_out.yml for worker2 and the control host:
  its server started, the gateway's backends reloaded);
- first answer: until the gateway has a request on worker2 answered (its probe, routing).

Then the load stops and the round waits until worker2 is parked again (the idle time, the
drain, scale_in.yml), which it also prints. Not a test: timings never gate CI. Needs root
and the sandbox tools.

    .venv/bin/python bench/autoscale.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clusterai_runner.config import Settings  # noqa: E402
from clusterai_runner.usecases import autoscale  # noqa: E402
from clusterai_runner.usecases.converge import CancelToken  # noqa: E402
from tests.helpers import ChatLoad, gateway_json, run_cli, wait_for  # noqa: E402

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
API_KEY = "cai_be4c0002_" + "b" * 40
STEPS = ("decision", "converge", "first answer")


def clusterai(*args: str) -> str:
    done = run_cli(*args, timeout=1800)
    if done.code != 0:
        sys.exit(f"error: bench: clusterai {args[0]} {args[1]}: {done.stderr[-3000:]}")
    return done.stdout


def cluster(scratch: Path) -> tuple[Path, str]:
    """The converged cluster's inventory directory, and ctl1's address."""
    status = json.loads(clusterai("sandbox", "up", "--hosts", "3", "--name", "bench-scale",
                                  "--json"))  # fmt: skip
    hosts = yaml.safe_load(Path(status["inventory"]).read_text())
    children = hosts["all"]["children"]
    children["workers"]["children"] = {
        "standby": {"hosts": {"worker2": children["workers"]["hosts"].pop("worker2")}}
    }
    children["parked"] = {"hosts": {"worker2": None}}
    inventory = scratch / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "gateway_admin_key": ADMIN_KEY,
        "gateway_api_keys": [{"name": "bench", "key": API_KEY}],
        "autoscale_pools": [{"name": "standby", "kind": "standby", "max": 1}],
        "autoscale_interval_s": 2, "autoscale_scale_out_delay_s": 4, "autoscale_idle_s": 10,
        "autoscale_cooldown_s": 5, "autoscale_target_queue_wait_s": 0.2,
        "autoscale_target_in_flight": 3,
    }))  # fmt: skip
    started = time.monotonic()
    clusterai("up", "-i", str(inventory))
    print(f"cluster converged in {time.monotonic() - started:.0f} s (clusterai up, 3 hosts)")
    control = next(h["address"] for h in status["hosts"] if h["name"] == "ctl1")
    return inventory, control


class Scaler:
    """The autoscaler's loop in a thread, each progress line stamped."""

    def __init__(self, inventory: Path) -> None:
        settings = Settings.from_env()
        self.seen: list[tuple[float, str]] = []
        self.cancel = CancelToken()
        scaler = autoscale.load(settings, inventory)
        self.thread = threading.Thread(
            target=autoscale.run,
            args=(scaler,),
            kwargs={"cancel": self.cancel, "progress": self.note},
        )

    def note(self, line: str) -> None:
        self.seen.append((time.monotonic(), line))

    def at(self, prefix: str, after: float) -> float | None:
        return next((t for t, line in self.seen if t >= after and line.startswith(prefix)), None)


def served_on(control: str, name: str) -> int:
    """Requests the gateway has had answered by ``name`` (sent, less those in flight)."""
    found = gateway_json(control, "/admin/backends", ADMIN_KEY)["backends"]
    backend = next((b for b in found if b["name"] == name and not b["standby"]), None)
    return int(backend["requests"] - backend["outstanding"]) if backend else 0


def one_round(control: str, scaler: Scaler) -> dict[str, float]:
    step = time.monotonic()
    load = ChatLoad(f"http://{control}:8000/v1", API_KEY, 8, pause_s=0.2, max_tokens=8)
    with load:
        decided = wait_for(lambda: scaler.at("scale-out worker2 (", step), 300, "a decision")
        done = wait_for(lambda: scaler.at("scale-out worker2: ", decided), 900, "the start")
        ended = next(line for t, line in scaler.seen if t == done)
        if "done" not in ended:
            sys.exit(f"error: bench: {ended}")
        wait_for(lambda: served_on(control, "worker2") > 0, 300, "worker2's first answer")
        answered = time.monotonic()
    if load.failures:
        sys.exit(f"error: bench: {len(load.failures)} failed requests: {load.failures[:3]}")
    stopped = time.monotonic()
    parked = wait_for(lambda: scaler.at("scale-in worker2: done", stopped), 600, "the park")
    return {
        "decision": decided - step,
        "converge": done - decided,
        "first answer": answered - done,
        "total": answered - step,
        "park": parked - stopped,
        "chats": float(load.done),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: bench: needs root (the sandbox boots hosts)", file=sys.stderr)
        return 2
    rows: list[dict[str, float]] = []
    columns = (*STEPS, "total", "park", "chats")
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        state = scratch / "state"
        os.environ.update({
            "CLUSTERAI_STATE_DIR": str(state),
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(state / "ansible-facts"),
        })  # fmt: skip
        scaler = None
        try:
            inventory, control = cluster(scratch)
            scaler = Scaler(inventory)
            scaler.thread.start()
            print(
                "  ".join(f"{s:>12}" for s in columns) + "   (seconds; park: from the load's end)"
            )
            for _ in range(args.rounds):
                row = one_round(control, scaler)
                rows.append(row)
                print("  ".join(f"{row[s]:12.1f}" for s in columns), flush=True)
        finally:
            if scaler is not None:
                scaler.cancel.cancel()
                scaler.thread.join(600)
            clusterai("sandbox", "down", "--name", "bench-scale")
    if rows:
        medians = {s: statistics.median(r[s] for r in rows) for s in (*STEPS, "total", "park")}
        print("median: " + ", ".join(f"{s} {v:.1f} s" for s, v in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
