"""The ``ollama_model`` module against a server speaking the Ollama API.

The server is tests/fixtures/fake_ollama.py, a test fixture (Ollama itself cannot be
downloaded here), started on a free loopback port; its request log shows what the module
asked for. The module runs as Ansible runs it on a host, with its arguments in a file
(``python MODULE ARGS.json``, Ansible's way to test a module: a second each saved against
an ansible-playbook start); the check-mode test runs it in a real ansible-playbook run on
localhost, which also shows the project's ansible.cfg finds it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, ansible_playbook, free_port

FIXTURE = REPO / "tests" / "fixtures" / "fake_ollama.py"


class Server:
    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.folder = folder

    def models(self) -> list[str]:
        manifests = self.folder / "manifests.json"
        return sorted(json.loads(manifests.read_text())) if manifests.exists() else []

    def requests(self) -> list[str]:
        log = self.folder / "requests.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    folder = tmp_path / "models"
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(folder)}
    process = subprocess.Popen(
        [sys.executable, str(FIXTURE), "serve"], env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the fake Ollama server did not start") from None
                time.sleep(0.05)
        yield Server(f"http://127.0.0.1:{port}", folder)
    finally:
        process.terminate()
        process.wait(timeout=10)


MODULE = REPO / "plugins" / "modules" / "ollama_model.py"


def run_module(tmp_path: Path, server: Server, **args: object) -> dict[str, object]:
    """Run ollama_model once with ``args``, as Ansible does on a host; return its result."""
    arguments = tmp_path / "args.json"
    arguments.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"api_url": server.url, **args}}))
    completed = subprocess.run(
        [sys.executable, str(MODULE), str(arguments)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    result: dict[str, object] = json.loads(completed.stdout)
    assert completed.returncode == (1 if result.get("failed") else 0), completed.stderr
    return result


def run_in_playbook(
    tmp_path: Path, server: Server, *extra: str, **args: object
) -> dict[str, object]:
    """Run ollama_model once with ``args`` in an ansible-playbook run on localhost; return
    its registered result."""
    out = tmp_path / "result.json"
    playbook = tmp_path / "play.yml"
    play = {
        "name": "Run ollama_model",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Run the module",
                "ollama_model": {"api_url": server.url, **args},
                "register": "result",
                "ignore_errors": True,
            },
            {
                "name": "Save the result",
                "ansible.builtin.copy": {
                    "content": "{{ result | to_json }}",
                    "dest": str(out),
                    "mode": "0600",
                },
                "check_mode": False,
            },
        ],
    }
    playbook.write_text(yaml.safe_dump([play]))
    completed = ansible_playbook(
        "localhost,",
        playbook,
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        *extra,
        timeout=120,
    )
    assert out.exists(), completed.stdout + completed.stderr
    result: dict[str, object] = json.loads(out.read_text())
    return result


def test_pulls_what_is_missing_once_and_reports_it(tmp_path: Path, server: Server) -> None:
    first = run_module(tmp_path, server, name=["smollm2", "nomic-embed-text:v1.5"])
    assert first["changed"] is True
    assert first["pulled"] == ["smollm2:latest", "nomic-embed-text:v1.5"]
    assert server.models() == ["nomic-embed-text:v1.5", "smollm2:latest"]

    second = run_module(tmp_path, server, name=["smollm2:latest", "nomic-embed-text:v1.5"])
    assert second["changed"] is False
    assert second["pulled"] == [] and second["removed"] == []
    assert second["models"] == ["nomic-embed-text:v1.5", "smollm2:latest"]
    pulls = [line for line in server.requests() if line.startswith("POST /api/pull")]
    assert len(pulls) == 2, server.requests()


def test_unlisted_models_stay_unless_pruning_is_asked_for(tmp_path: Path, server: Server) -> None:
    run_module(tmp_path, server, name=["a", "b"])
    kept = run_module(tmp_path, server, name=["a"])
    assert kept["changed"] is False
    assert server.models() == ["a:latest", "b:latest"]

    pruned = run_module(tmp_path, server, name=["a"], prune=True)
    assert pruned["changed"] is True
    assert pruned["removed"] == ["b:latest"]
    assert server.models() == ["a:latest"]

    absent = run_module(tmp_path, server, name=["a"], state="absent")
    assert absent["removed"] == ["a:latest"]
    assert server.models() == []
    again = run_module(tmp_path, server, name=["a"], state="absent")
    assert again["changed"] is False


def test_check_mode_reports_without_touching_the_server(tmp_path: Path, server: Server) -> None:
    run_module(tmp_path, server, name=["keep"])
    result = run_in_playbook(tmp_path, server, "--check", name=["new"], prune=True)
    assert result["changed"] is True
    assert result["pulled"] == ["new:latest"]
    assert result["removed"] == ["keep:latest"]
    assert server.models() == ["keep:latest"]
    assert not [r for r in server.requests()[1:] if not r.startswith("GET")][1:]


def test_a_failed_pull_says_which_model_and_why(tmp_path: Path, server: Server) -> None:
    result = run_module(tmp_path, server, name=["good", "does-not-exist:7b", "later"])
    assert result["failed"] is True
    assert result["msg"] == (
        "ollama_model: pull does-not-exist:7b: pull model manifest: file does not exist"
    )
    assert result["pulled"] == ["good:latest"]
    assert server.models() == ["good:latest"]


def test_an_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    dead = Server(f"http://127.0.0.1:{free_port()}", tmp_path / "none")
    result = run_module(tmp_path, dead, name=["x"])
    assert result["failed"] is True
    message = str(result["msg"])
    assert message.startswith(f"ollama_model: GET {dead.url}/api/tags: "), message
    assert "\n" not in message


def test_prune_with_state_absent_is_refused(tmp_path: Path, server: Server) -> None:
    result = run_module(tmp_path, server, name=["x"], state="absent", prune=True)
    assert result["msg"] == "ollama_model: prune=true only goes with state=present"
    assert server.requests() == []
