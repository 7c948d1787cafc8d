#!/usr/bin/env python3
"""Bench: the web app's pages over a big store, under waitress and under gunicorn.

One run, on this machine. A SQLite store in a temporary directory is filled with
200 hosts, 10,000 runs (each with 30 task results on 3 hosts and its recap) and
1,000,000 usage records over 30 days (10 keys, 5 models, 4 backends): synthetic records,
made here for the measurement, not a real cluster's. The overview's host status comes from
200 synthetic host records (the status watch's source is swapped; asking 200 real hosts
is `clusterai status`'s bench, bench/validate_vs_ping.py). Then the same app is served by
each server in turn on a free port of 127.0.0.1; one logged-in client asks each page
``--requests`` times, one after another, and reads the server's own time from the
``Server-Timing`` header the app sets; then ``--clients`` clients at once ask the overview's
fragment for ``--seconds`` (requests per second, p95 of the whole request).

Prints per page and server p50 and p95 (target: p95 under 150 ms), and gunicorn over
waitress. Not a test: timings never gate CI.

    .venv/bin/python bench/web.py [--requests 40] [--clients 8] [--seconds 5]
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HOSTS, RUNS, EVENTS_PER_RUN, USAGE = 200, 10_000, 30, 1_000_000
PASSWORD = "bench password, not a real one"

# The module each server imports: the app over the bench's store and synthetic hosts.
APP_MODULE = """
import json, os
from clusterai_runner.config import Settings
from clusterai_runner.usecases.status import Gpu, HostStatus
from clusterai_runner.web import create_app

def hosts():
    made = []
    for n in range(HOSTS):
        made.append(HostStatus(
            f"gpu{n:03d}", "workers" if n else "control", f"192.0.2.{n % 250}", True,
            "up" if n % 17 else "down", "llamacpp", ["smollm2-135m"],
            gpus=[Gpu("NVIDIA L4", 0.42, 9e9, 2.4e10)],
            last_run={"id": 10000 - n, "playbook": "site.yml", "result": "ok", "changed": 0},
            problems=[] if n % 17 else ["llamacpp server on port 8080 does not answer"]))
    return made

HOSTS = int(os.environ["BENCH_HOSTS"])
app = create_app({
    "CLUSTERAI_SETTINGS": Settings.from_env(),
    "SECRET_KEY": "bench-secret-key-" + "x" * 32,
    "CLUSTERAI_STATUS_SOURCE": hosts,
    "CLUSTERAI_STATUS_INTERVAL": 5.0,
})
"""


def fill(state: Path) -> None:
    import sqlalchemy as sa

    from clusterai_runner.store import Store
    from clusterai_runner.store.schema import events, run_hosts, runs
    from clusterai_runner.usecases import users

    store = Store.open(f"sqlite:///{state / 'state.db'}")
    users.add(None, "bench", "admin", PASSWORD, store)  # type: ignore[arg-type]
    for k in range(10):
        store.add_key(f"team-{k}", f"p{k:07d}", "0" * 64, False, None, None)
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(days=30)
    engine = store._engine
    with engine.begin() as db:
        run_rows, host_rows, event_rows = [], [], []
        for r in range(1, RUNS + 1):
            began = start + timedelta(seconds=r * 250)
            run_rows.append(
                {
                    "id": r,
                    "playbook": rng.choice(
                        ["site.yml", "scale_out.yml", "scale_in.yml", "upgrade.yml"]
                    ),
                    "inventory": "/srv/inventory",
                    "limit_pattern": "",
                    "started_at": began.isoformat(timespec="seconds"),
                    "finished_at": (began + timedelta(seconds=90)).isoformat(timespec="seconds"),
                    "status": "failed" if r % 23 == 0 else "successful",
                    "rc": 0,
                }
            )
            names = [f"gpu{(r + h) % HOSTS:03d}" for h in range(3)]
            for h in names:
                host_rows.append(
                    {
                        "run_id": r,
                        "host": h,
                        "ok": 30,
                        "changed": 2,
                        "unreachable": 0,
                        "failed": 0,
                        "skipped": 3,
                        "rescued": 0,
                        "ignored": 0,
                    }
                )
            for e in range(EVENTS_PER_RUN):
                event_rows.append(
                    {
                        "run_id": r,
                        "host": names[e % 3],
                        "task": f"task {e}",
                        "status": "changed" if e % 9 == 0 else "ok",
                        "message": "",
                        "at": (began + timedelta(seconds=3 * e)).isoformat(timespec="seconds"),
                    }
                )
        db.execute(runs.insert(), run_rows)
        db.execute(run_hosts.insert(), host_rows)
        for first in range(0, len(event_rows), 50_000):
            db.execute(events.insert(), event_rows[first : first + 50_000])
    # Through the gateway's own write path (records and their hourly sums).
    span = 30 * 86400
    for first in range(0, USAGE, 100_000):
        batch = []
        for n in range(first, first + 100_000):
            at = start + timedelta(seconds=span * n / USAGE)
            batch.append(
                {
                    "at": at.isoformat(timespec="seconds"),
                    "key_id": n % 10 + 1,
                    "route": "/v1/chat/completions",
                    "model": f"model-{n % 5}",
                    "backend": f"gpu{n % 4:03d}",
                    "status": 200 if n % 50 else 503,
                    "prompt_tokens": 20 + n % 30,
                    "completion_tokens": 50 + n % 90,
                    "latency_ms": rng.lognormvariate(5, 0.6),
                    "ttft_ms": rng.lognormvariate(3.5, 0.5),
                    "cache_hit": n % 7 == 0,
                    "record_id": f"{n:032x}",
                }
            )
        store.add_usage(batch)
    with engine.begin() as db:
        db.execute(sa.text("ANALYZE"))
    store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(server: str, port: int, workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    python = str(Path(sys.executable))
    if server == "waitress":
        argv = [
            python,
            "-m",
            "waitress",
            "--listen",
            f"127.0.0.1:{port}",
            "--threads",
            "8",
            "bench_web_app:app",
        ]
    else:
        argv = [
            python,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            "--log-level",
            "warning",
            "bench_web_app:app",
        ]
    return subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, float, float, str]:
        began = time.perf_counter()
        with self.opener.open(self.base + path, timeout=30) as answer:
            body = answer.read().decode()
            timing = answer.headers.get("Server-Timing", "app;dur=nan")
            status = answer.status
        wall = (time.perf_counter() - began) * 1000
        return status, float(timing.split("dur=")[1]), wall, body

    def login(self) -> None:
        for _ in range(100):
            try:
                _, _, _, page = self.get("/login")
                break
            except OSError:
                time.sleep(0.1)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, "no CSRF token on the login page"
        data = urllib.parse.urlencode(
            {"name": "bench", "password": PASSWORD, "csrf_token": token.group(1)}
        ).encode()
        with self.opener.open(self.base + "/login", data=data, timeout=30) as answer:
            assert answer.status == 200 and "Overview" in answer.read().decode()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clusterai-bench-web-") as tmp:
        workdir = Path(tmp)
        state = workdir / "state"
        state.mkdir(mode=0o700)
        os.environ["CLUSTERAI_STATE_DIR"] = str(state)
        began = time.monotonic()
        fill(state)
        print(
            f"store: {HOSTS} hosts, {RUNS} runs with {RUNS * EVENTS_PER_RUN} task results, "
            f"{USAGE} usage records; filled in {time.monotonic() - began:.0f} s "
            f"({(state / 'state.db').stat().st_size / 2**20:.0f} MiB)"
        )
        (workdir / "bench_web_app.py").write_text(APP_MODULE)
        env = {
            **os.environ,
            "PYTHONPATH": f"{workdir}:{REPO}",
            "BENCH_HOSTS": str(HOSTS),
            "CLUSTERAI_STATE_DIR": str(state),
        }
        pages = [
            "/",
            "/fragments/hosts",
            "/runs/",
            "/runs/?status=failed&host=gpu007",
            f"/runs/{RUNS // 2}",
            "/usage/?window=1h&by=model",
            "/usage/?window=24h&by=key",
            "/usage/?window=7d&by=hour",
            "/usage/?window=30d&by=model",
            "/usage/csv?window=24h&by=backend",
            "/keys/",
            "/users",
            "/audit",
            "/jobs/",
        ]
        results: dict[str, dict[str, tuple[float, float]]] = {}
        load: dict[str, tuple[float, float]] = {}
        for server in ("waitress", "gunicorn"):
            port = free_port()
            process = serve(server, port, workdir, env)
            try:
                client = Client(f"http://127.0.0.1:{port}")
                client.login()
                client.get("/")  # the status watch's first look
                time.sleep(0.5)
                month = client.get("/usage/?window=30d&by=model")[3]
                assert month.count('data-group="model-') == 5, "the usage page shows no data"
                results[server] = {}
                for page in pages:
                    times = []
                    for _ in range(args.requests):
                        status, server_ms, _, _ = client.get(page)
                        assert status == 200, (page, status)
                        times.append(server_ms)
                    results[server][page] = (statistics.median(times), percentile(times, 0.95))
                load[server] = concurrent(client, args.clients, args.seconds)
            finally:
                process.terminate()
                process.wait(10)
        print(f"\n{'page':<36} {'waitress p50/p95 ms':>22} {'gunicorn p50/p95 ms':>22}")
        worst = 0.0
        for page in pages:
            w, gu = results["waitress"][page], results["gunicorn"][page]
            worst = max(worst, w[1], gu[1])
            print(f"{page:<36} {w[0]:>10.1f} /{w[1]:>8.1f}   {gu[0]:>10.1f} /{gu[1]:>8.1f}")
        print(f"\nworst p95: {worst:.1f} ms (target: under 150 ms)")
        for server, (rate, p95) in load.items():
            print(
                f"{server}: {args.clients} clients on /fragments/hosts: {rate:.0f} requests/s, "
                f"p95 {p95:.1f} ms"
            )
        ratio = load["gunicorn"][0] / load["waitress"][0]
        print(f"gunicorn / waitress throughput: {ratio:.2f}x")
        print(json.dumps({"pages": results, "load": load}))
    return 0


def concurrent(client: Client, clients: int, seconds: float) -> tuple[float, float]:
    walls: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def one() -> None:
        mine = []
        while time.monotonic() < stop:
            status, _, wall, _ = client.get("/fragments/hosts")
            assert status == 200
            mine.append(wall)
        with lock:
            walls.extend(mine)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(walls) / seconds, percentile(walls, 0.95)


if __name__ == "__main__":
    raise SystemExit(main())
