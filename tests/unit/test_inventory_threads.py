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


def test_a_long_running_process_sees_group_vars_files_added_and_removed(tmp_path: Path) -> None:
    """Ansible remembers per process which group_vars files it found: the autoscaler and
    the web app read the inventory again and again, and must see today's files."""
    (tmp_path / "hosts.yml").write_text(
        "control:\n  hosts:\n    ctl1:\n      ansible_host: 192.0.2.10\n"
        "workers:\n  hosts:\n    w1:\n      ansible_host: 192.0.2.20\n"
    )

    def port() -> object:
        [worker] = [h for h in load(tmp_path) if h.name == "w1"]
        return worker.variables.get("clusterai_llamacpp_port")

    assert port() is None
    (tmp_path / "group_vars").mkdir()  # a directory that was missing at the first read
    (tmp_path / "group_vars/workers.yml").write_text("clusterai_llamacpp_port: 8090\n")
    assert port() == 8090
    (tmp_path / "group_vars/workers.yml").unlink()
    assert port() is None
