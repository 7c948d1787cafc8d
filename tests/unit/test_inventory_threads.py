"""Reading inventories from several threads at once (the web app's status watch beside a
job) gives every thread its hosts: Ansible's inventory code is not thread-safe, so the
adapter lets one thread read at a time."""

from __future__ import annotations

from pathlib import Path

from clusterai_runner.adapters.inventory import load
from tests.helpers import in_threads


def test_threads_reading_inventories_at_once_each_get_their_hosts(tmp_path: Path) -> None:
    paths = []
    for n in range(4):
        path = tmp_path / f"hosts{n}.yml"
        path.write_text(
            "control:\n  hosts:\n    ctl1:\n      ansible_host: 192.0.2.10\n"
            f"workers:\n  hosts:\n    w{n}:\n      ansible_host: 192.0.2.{20 + n}\n"
        )
        paths.append(path)
    results: dict[int, list[str]] = {}

    def read(n: int) -> None:
        for _ in range(5):
            results[n] = [h.name for h in load(paths[n])]

    assert in_threads(read, 4) == []
    assert results == {n: ["ctl1", f"w{n}"] for n in range(4)}
