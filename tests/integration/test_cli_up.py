"""``clusterai up`` converges sandbox hosts through ansible-runner and stores the run;
``clusterai runs`` shows it again."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import booted_sandbox, run_cli

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def sandbox(state_dir: Path) -> Iterator[dict[str, Any]]:
    with booted_sandbox("cliup", 2) as status:
        yield status


RECAP = re.compile(r"^\S+\s+: ok=\d+ .*$", re.M)


def ansible_recap(state_dir: Path, run_id: int) -> list[str]:
    """The PLAY RECAP lines Ansible itself printed, from ansible-runner's artifacts."""
    (stdout,) = (state_dir / "runs" / str(run_id) / "artifacts").glob("*/stdout")
    text = stdout.read_text().replace("\r", "")
    return [line.rstrip() for line in RECAP.findall(text[text.rindex("PLAY RECAP") :])]


@pytest.fixture(scope="module")
def converged(sandbox: dict[str, Any]) -> list[Any]:
    return [run_cli("up", "-i", sandbox["inventory"], timeout=1200) for _ in range(2)]


def test_up_converges_and_a_second_run_changes_nothing(converged: list[Any]) -> None:
    first, second = converged
    assert first.code == 0, first.stderr[-3000:]
    assert second.code == 0, second.stderr[-3000:]
    assert re.search(r"^run \d+: successful", first.stdout, re.M)
    changed = re.findall(r"changed=(\d+)", second.stdout)
    assert changed and set(changed) == {"0"}
    # The live view named tasks as they ran.
    assert "Install the base packages" in first.stderr


def test_runs_show_prints_the_recap_ansible_printed(state_dir: Path, converged: list[Any]) -> None:
    runs = json.loads(run_cli("runs", "list", "--json").stdout)
    mine = [r for r in runs if r["inventory"].endswith("cliup/inventory.yml")]
    assert [r["status"] for r in mine[:2]] == ["successful", "successful"]
    run_id = mine[0]["id"]
    shown = run_cli("runs", "show", str(run_id))
    assert shown.code == 0
    ours = [line.rstrip() for line in RECAP.findall(shown.stdout)]
    assert ours == ansible_recap(state_dir, run_id)
    assert {line.split()[0] for line in ours} >= {"ctl1", "worker1"}
    events = json.loads(run_cli("runs", "show", str(run_id), "--json").stdout)["events"]
    assert events and all(e["status"] in ("ok", "skipped") for e in events)


def test_a_missing_inventory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("up", "-i", str(tmp_path / "nope.yml"))
    assert result.code == 2
    assert result.stderr == (
        f"error: inventory {tmp_path / 'nope.yml'}: does not exist (give the path with -i)\n"
    )


def test_an_unknown_run_is_one_line_and_exit_2() -> None:
    result = run_cli("runs", "show", "999999")
    assert result.code == 2
    assert result.stderr == "error: run 999999: no such run (see `clusterai runs list`)\n"
