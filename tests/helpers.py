"""Helpers shared by the test suites: run the real CLI, snapshot what it leaves behind."""

from __future__ import annotations

import contextlib
import datetime
import functools
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from clusterai_runner.adapters.openssh import openssh_argv

if TYPE_CHECKING:  # the tests that load the gateway import openai; the others need not
    import openai

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
CLUSTERAI = Path(sys.executable).parent / "clusterai"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def venv_path() -> str:
    """PATH with this virtual environment's tools first (molecule, ansible-inventory)."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def ansible_playbook(
    inventory: str | Path, playbook: str | Path, *extra: str, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    """Run ansible-playbook from this virtual environment with the repository's ansible.cfg;
    a bare playbook name is taken from playbooks/."""
    path = Path(playbook) if Path(playbook).is_absolute() else REPO / "playbooks" / playbook
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(path), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def booted_sandbox(name: str, hosts: int) -> Iterator[dict[str, Any]]:
    """A sandbox of ``hosts`` hosts, its status as JSON while it lives; always taken down."""
    up = run_cli("sandbox", "up", "--hosts", str(hosts), "--name", name, "--json")
    assert up.code == 0, up.stderr
    try:
        yield json.loads(up.stdout)
    finally:
        down = run_cli("sandbox", "down", "--name", name)
        assert down.code == 0, down.stderr


def backend_headers(status: dict[str, Any]) -> dict[str, str]:
    """What a client sends a sandbox worker's inference server: its inventory's backend
    key (llama.cpp's servers answer 401 without it)."""
    inventory = yaml.safe_load(Path(status["inventory"]).read_text())
    return {"Authorization": f"Bearer {inventory['all']['vars']['clusterai_backend_api_key']}"}


def monitoring_get(
    status: dict[str, Any], url: str, login: bool = True, password: str | None = None
) -> str:
    """GET a sandbox's monitoring service (Prometheus, Alertmanager, an exporter) over TLS,
    its certificate checked against the CA copy the converge left on this machine, with
    the monitoring login (the sandbox inventory's password unless ``password`` is given:
    a vaulted inventory's); the answer's text (an error status raises)."""
    import base64
    import ssl

    from clusterai_runner.config import Settings

    inventory = yaml.safe_load(Path(status["inventory"]).read_text())
    control = next(h["address"] for h in status["hosts"] if h["group"] == "control")
    ca = Settings.from_env().cache_dir / "pki" / control / "ca.crt"
    if password is None:
        password = inventory["all"]["vars"]["clusterai_monitoring_password"]
    token = base64.b64encode(f"clusterai:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"} if login else {}
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return str(response.read().decode())


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Result:
    """Run the installed ``clusterai`` console script as an operator would."""
    completed = subprocess.run(
        [str(CLUSTERAI), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def tree(path: Path) -> set[str]:
    """Every path below ``path``, relative, for before/after comparisons; what is inside
    a sandbox host's own file system left out (``sandboxes/NAME/hosts/HOST/upper/...``:
    a host that another module booted writes there whenever its services do)."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(path):
        parts = Path(folder).relative_to(path).parts
        if len(parts) == 5 and parts[0] == "sandboxes" and parts[2] == "hosts":
            dirs.clear()  # the host's layer itself is listed, not what its host writes
            continue
        found |= {str(Path(*parts, name)) for name in [*dirs, *files]}
    return found


def nspawn_command_lines() -> list[str]:
    """``PID command line`` of every systemd-nspawn process on this machine."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and os.path.basename(args[0]) == b"systemd-nspawn":
                lines.append(f"{entry.name} " + b" ".join(args).decode(errors="replace"))
    return lines


def processes_mentioning(path: Path) -> list[int]:
    """PIDs whose command line or environment names ``path``: a host's nspawn or init."""
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def in_threads(work: Callable[[int], None], count: int) -> list[BaseException]:
    """``work(0)`` to ``work(count - 1)``, each in a thread of its own, all at once; what
    they raised."""
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            work(number)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def free_port(address: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``address`` now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def gateway_json(address: str, path: str, key: str, body: Any = None) -> Any:
    """A call to the gateway of the control host at ``address`` (its port 8000) with the
    bearer ``key``: a POST of ``body`` as JSON, or a GET; its JSON answer."""
    request = urllib.request.Request(
        f"http://{address}:8000{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


class ChatLoad:
    """``clients`` threads, each streaming short chats for ``model`` through the gateway at
    ``url`` (``.../v1``) with the official openai client (or asking without streaming),
    one after another (``pause_s`` apart, changed by ``pace``), until the block ends; every
    failure is kept. Each prompt is unique, so the answer cache never answers one."""

    def __init__(
        self,
        url: str,
        key: str,
        clients: int,
        pause_s: float = 1.0,
        max_tokens: int = 4,
        model: str = "smollm2",
        stream: bool = True,
    ) -> None:
        self.url, self.key, self.pause_s, self.max_tokens = url, key, pause_s, max_tokens
        self.model, self.stream = model, stream
        self.done = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # Notified by pace and stop; a client's pause ends early when the pace changed.
        self._paced = threading.Condition()
        self._pace = 0
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]

    def __enter__(self) -> ChatLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def pace(self, pause_s: float) -> None:
        """Make every client pause ``pause_s`` between its requests from now on; a client in
        its pause starts the new one at once."""
        with self._paced:
            self.pause_s = pause_s
            self._pace += 1
            self._paced.notify_all()

    def stop(self) -> None:
        with self._paced:
            self._stop.set()
            self._paced.notify_all()
        for thread in self._threads:
            thread.join(timeout=180)

    def _client(self, number: int) -> None:
        import openai

        client = openai.OpenAI(base_url=self.url, api_key=self.key, max_retries=0)
        sent = 0
        while not self._stop.is_set():
            sent += 1
            try:
                self._chat(client, f"Count: {number}-{sent}.")
            except Exception as exc:
                with self._lock:
                    self.failures.append(f"client {number}, request {sent}: {exc!r}")
            else:
                with self._lock:
                    self.done += 1
            self._pause()

    def _pause(self) -> None:
        with self._paced:
            pace = self._pace
            self._paced.wait_for(lambda: self._stop.is_set() or self._pace != pace, self.pause_s)

    def _chat(self, client: openai.OpenAI, prompt: str) -> None:
        asked = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            "timeout": 120,
        }
        if not self.stream:
            answer = client.chat.completions.create(**asked)
            if not answer.choices[0].message.content:
                raise AssertionError("an answer without content")
            return
        stream = client.chat.completions.create(**asked, stream=True)
        ends = [c.choices[0].finish_reason for c in stream if c.choices]
        if not any(ends):
            raise AssertionError("the stream ended without a finish reason")


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """``predicate``'s first true value, asked again with a growing pause (10 ms to 0.1 s)
    so a slow condition does not spin a core."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.1)
    raise AssertionError(f"timed out waiting for {what}")


def address(status: dict[str, Any], name: str) -> str:
    """The address of the sandbox host ``name`` (``clusterai sandbox status --json``)."""
    return next(h["address"] for h in status["hosts"] if h["name"] == name)


def ssh(status: dict[str, Any], address: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run a command on a sandbox host as root, with host key checking on."""
    return subprocess.run(
        openssh_argv(
            address,
            *command,
            user="root",
            port=int(status.get("ssh_port") or 22),
            key_file=status["ssh_key"],
            known_hosts=status["known_hosts"],
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def mounts_below(path: Path) -> list[str]:
    prefix = str(path)
    return [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on a free loopback port; yield its base URL."""
    handler = functools.partial(_QuietFiles, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1: (ca.crt, server.crt, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths
