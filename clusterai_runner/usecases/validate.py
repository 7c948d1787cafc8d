"""SSH preflight of every host at once: ``clusterai validate``.

One SSH connection per host (host key checking on, no prompts) runs a small POSIX shell
probe that prints everything the checks need; the checks themselves are pure functions of
that output, so they are unit-tested without hosts. Connections are made in-process
(``sshprobe``, asyncssh, one event loop for every host); a host whose inventory SSH options
only OpenSSH understands is checked with OpenSSH's ``ssh`` instead. Thresholds, supported
systems and ports come from the preflight role's defaults (``roles/preflight/defaults/main.yml``),
overridden per host by the same inventory variables, so the CLI and the role agree.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from clusterai_runner import backends
from clusterai_runner.adapters.inventory import InventoryHost
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.openssh import openssh_argv
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import REPO

if TYPE_CHECKING:
    from clusterai_runner.adapters import ssh as sshprobe

PREFLIGHT_DEFAULTS = REPO / "roles" / "preflight" / "defaults" / "main.yml"
MIN_PYTHON = (3, 8)
SKEW_WARN_S = 2.0
SKEW_FAIL_S = 30.0

CHECKS = (
    "reach", "host_key", "auth", "sudo", "python", "os", "memory", "disk", "gpu", "ports",
    "clock",
)  # fmt: skip

# What runs on the host: the Python Ansible will use, alone, when there is one (one
# process: on a 2-core controller probing 200 hosts at once every fork shows), else the
# shell. Both print the same key=value lines. PYTHON, PYCODE, MODELS_DIR and PORTS are
# substituted before sending.
PROBE = r"""
py=PYTHON
if command -v "$py" >/dev/null 2>&1; then exec "$py" -I -S -c PYCODE; fi
echo python=
uid=$(id -u); echo "uid=$uid"
if [ "$uid" != 0 ]; then sudo -n true 2>/dev/null && echo sudo=ok || echo sudo=no; fi
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os=${ID:-} ${VERSION_ID:-}"; fi
read -r init < /proc/1/comm; echo "init=$init"
d=MODELS_DIR; while [ ! -d "$d" ]; do d=${d%/*}; d=${d:-/}; done
echo "disk_path=$d"
df -Pk "$d" | { read -r _; read -r _ _ _ avail _; echo "disk_kb=$avail"; }
awk -v ports=" PORTS " '
  function hex(s,  i, n) { n = 0; s = tolower(s)
    for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
    return n }
  FILENAME == "/proc/meminfo" && /^MemTotal:/ {print "mem_kb=" $2}
  FILENAME != "/proc/meminfo" && $4 == "0A" {
    print "listen=" $2; split($2, a, ":")
    if (index(ports, " " hex(a[2]) " ")) print "inode=" $2 " " $10 }
' /proc/meminfo /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r line; do
  case $line in
    inode=*)
      set -- ${line#inode=}; unit=-
      pid=$(find /proc/[0-9]*/fd -lname "socket:\[$2\]" 2>/dev/null | head -n 1 | cut -d/ -f3)
      if [ -n "$pid" ]; then
        unit=$(sed -n 's#.*/\([^/]*\)\.\(service\|scope\)\(/.*\)\{0,1\}$#\1#p' \
          "/proc/$pid/cgroup" | tail -n 1)
      fi
      echo "holder=$1 ${unit:-+}";;
    *) echo "$line";;
  esac
done
n=0
for dev in /sys/bus/pci/devices/*; do
  [ -r "$dev/vendor" ] || continue
  read -r vendor < "$dev/vendor"; read -r class < "$dev/class"
  case "$vendor:$class" in 0x10de:0x0300*|0x10de:0x0302*) n=$((n+1));; esac
done
echo "gpus=$n"
echo "time=$(date +%s.%N)"
"""

# The same probe in Python, kept to what Python 3.0 parses so an old interpreter still
# reports its version. MODELS_DIR and PORTS are JSON literals.
PYCODE = r"""
import os, sys, time
out = []
def say(key, value):
    out.append("%s=%s" % (key, value))
def read(path):
    try:
        with open(path) as f:
            return f.read()
    except (OSError, IOError):
        return ""
say("python", "%d.%d.%d" % tuple(sys.version_info[:3]))
say("python_path", sys.executable)
uid = os.getuid()
say("uid", uid)
if uid != 0:
    import subprocess
    try:
        null = open(os.devnull, "w")
        ok = subprocess.call(["sudo", "-n", "true"], stdout=null, stderr=null) == 0
    except OSError:
        ok = False
    say("sudo", "ok" if ok else "no")
release = {}
for line in read("/etc/os-release").splitlines():
    key, _, value = line.partition("=")
    release[key.strip()] = value.strip().strip("\"'")
if release:
    say("os", "%s %s" % (release.get("ID", ""), release.get("VERSION_ID", "")))
say("init", read("/proc/1/comm").strip())
d = MODELS_DIR
while not os.path.isdir(d):
    d = os.path.dirname(d) or "/"
say("disk_path", d)
st = os.statvfs(d)
say("disk_kb", st.f_bavail * st.f_frsize // 1024)
for line in read("/proc/meminfo").splitlines():
    if line.startswith("MemTotal:"):
        say("mem_kb", line.split()[1])
gpus = 0
base = "/sys/bus/pci/devices"
for dev in (os.listdir(base) if os.path.isdir(base) else []):
    vendor = read(base + "/" + dev + "/vendor").strip()
    kind = read(base + "/" + dev + "/class").strip()
    if vendor == "0x10de" and kind[:6] in ("0x0300", "0x0302"):
        gpus += 1
say("gpus", gpus)
def listening():
    # Listening TCP sockets through netlink (sock_diag, what ss uses), as /proc/net/tcp
    # writes them: reading /proc/net/tcp walks the kernel's whole connection table, some
    # milliseconds on a large machine. None when netlink is not allowed.
    # The C modules: importing socket and struct would cost more than the lookup.
    import _socket as socket, _struct as struct
    found = []
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)
    except (OSError, AttributeError):
        return None
    try:
        for family in (socket.AF_INET, socket.AF_INET6):
            request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << 10)
            request += b"\0" * 48
            sock.sendto(struct.pack("=IHHII", 16 + len(request), 20, 0x301, 1, 0) + request,
                        (0, 0))
            done = False
            while not done:
                data = sock.recv(65536)
                offset = 0
                while offset + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, offset)
                    if kind in (2, 3):
                        done = True
                        break
                    port = struct.unpack_from(">H", data, offset + 20)[0]
                    raw = data[offset + 24:offset + 24 + (4 if family == socket.AF_INET else 16)]
                    words = "".join("%08X" % struct.unpack_from("<I", raw, i)[0]
                                    for i in range(0, len(raw), 4))
                    inode = struct.unpack_from("=I", data, offset + 84)[0]
                    found.append(("%s:%04X" % (words, port), str(inode)))
                    offset += (length + 3) & ~3
    except OSError:
        return None
    finally:
        sock.close()
    return found
sockets = listening()
if sockets is None:
    sockets = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in read(table).splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":
                sockets.append((fields[1], fields[9]))
needed = set(PORTS)
holding = []
for entry, inode in sockets:
    say("listen", entry)
    if int(entry.rsplit(":", 1)[1], 16) in needed:
        holding.append((entry, inode))
if holding:
    # Who holds a needed port: the systemd unit of the process with the socket open, as
    # the preflight role's module reads it ("-": no process on this host has it, "+": a
    # process outside any unit).
    owners = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                owners.setdefault(link[8:-1], pid)
    for entry, inode in holding:
        unit = "-"
        if inode in owners:
            unit = "+"
            for line in read("/proc/%s/cgroup" % owners[inode]).splitlines():
                for part in reversed(line.split(":", 2)[-1].split("/")):
                    if part.endswith((".service", ".scope")):
                        unit = part.rsplit(".", 1)[0]
                        break
        say("holder", "%s %s" % (entry, unit))
say("time", "%.6f" % time.time())
sys.stdout.write("\n".join(out) + "\n")
"""


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass, warn, fail, skip
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass
class HostReport:
    name: str
    address: str
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> str:
        states = {c.status for c in self.checks}
        return "fail" if "fail" in states else "warn" if "warn" in states else "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "status": self.status,
            "checks": [c.to_json() for c in self.checks],
        }


@dataclass(frozen=True)
class Probe:
    """What one SSH connection to the host gave back."""

    rc: int
    stdout: str
    stderr: str
    sent_at: float
    received_at: float

    def values(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for line in self.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                found.setdefault(key.strip(), []).append(value.strip())
        return found


def preflight_defaults() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(PREFLIGHT_DEFAULTS.read_text())
    return data


def settings_for(host: InventoryHost, defaults: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **{k: v for k, v in host.variables.items() if k.startswith("preflight_")}}


def needed_ports(host: InventoryHost, settings: dict[str, Any]) -> dict[int, str]:
    """Port -> the systemd unit allowed to hold it, for this host."""
    ports = {int(p): str(u) for p, u in settings["preflight_ports_all"].items()}
    if host.kind == "control":
        ports.update({int(p): str(u) for p, u in settings["preflight_ports_control"].items()})
    else:
        server = backends.of_host(host.variables)
        if server is not None:
            ports[server.port_for(host.variables)] = server.unit
    return ports


def ssh_command(host: InventoryHost, accept_new: bool, timeout: float) -> list[str]:
    """OpenSSH's ssh running the probe's shell on ``host`` (for hosts asyncssh cannot take)."""
    return openssh_argv(
        host.host, "sh", "-s", port=host.port, user=host.user, key_file=host.key_file,
        accept_new=accept_new, connect_timeout=timeout, multiplex=False, extra=host.ssh_args,
    )  # fmt: skip


_CONNECT_ERROR = re.compile(r"connect to host (\S+) port (\d+): (.+)")


def reach_failure(probe: Probe) -> Check | None:
    """A failed reach check when ssh could not open a TCP connection at all."""
    if probe.rc != 255:
        return None
    for line in probe.stderr.splitlines():
        found = _CONNECT_ERROR.search(line)
        if found:
            where, reason = f"{found.group(1)}:{found.group(2)}", found.group(3).strip()
            return Check(
                "reach", "fail", f"{where}: {reason}",
                "check the address, the network path and that sshd runs",
            )  # fmt: skip
        if "Could not resolve hostname" in line:
            return Check("reach", "fail", line.strip(), "fix ansible_host in the inventory")
    if "no answer within" in probe.stderr:
        return Check("reach", "fail", probe.stderr.strip(), "check the network path")
    return None


def fingerprint(host: InventoryHost, timeout: float) -> str:
    """The SHA256 fingerprint of the host's ed25519 (or other) key, as ssh shows it."""
    scan = subprocess.run(
        ["ssh-keyscan", "-T", str(max(1, int(timeout))), "-p", str(host.port), host.host],
        capture_output=True,
        text=True,
        check=False,
    )
    keys = [line for line in scan.stdout.splitlines() if line and not line.startswith("#")]
    if not keys:
        return "unknown"
    keys.sort(key=lambda line: "ed25519" not in line)
    shown = subprocess.run(
        ["ssh-keygen", "-lf", "-"],
        input=keys[0] + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    parts = shown.stdout.split()
    return f"{parts[1]} ({parts[-1].strip('()')})" if len(parts) >= 2 else "unknown"


def _key_changed(host: InventoryHost, timeout: float) -> Check:
    files = ", ".join(host.known_hosts_files()) or "~/.ssh/known_hosts"
    return Check(
        "host_key",
        "fail",
        f"the host key CHANGED; it is now {fingerprint(host, timeout)}: a reinstalled"
        " host, or someone in the middle",
        f"confirm the new key on the host's console, then replace its line in {files}",
    )


def _key_unknown(host: InventoryHost, timeout: float) -> Check:
    files = ", ".join(host.known_hosts_files()) or "~/.ssh/known_hosts"
    return Check(
        "host_key",
        "fail",
        f"unknown host key {fingerprint(host, timeout)}",
        f"compare it with the host's console, then add it to {files}"
        " (or run again with --accept-new-host-keys)",
    )


def _auth_refused(host: InventoryHost) -> list[Check]:
    key = f" with {host.key_file}" if host.key_file else ""
    return [
        Check("host_key", "pass", "matches known_hosts"),
        Check(
            "auth",
            "fail",
            f"the host refused {host.user}{key}",
            f"add the public key to ~{host.user}/.ssh/authorized_keys on the host",
        ),
    ]


def connection_checks(host: InventoryHost, probe: Probe, timeout: float) -> list[Check] | None:
    """host_key and auth from OpenSSH's answer; None when the connection worked."""
    err = probe.stderr
    if probe.rc != 255:
        return None
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
        return [_key_changed(host, timeout)]
    if "Host key verification failed" in err or "host key is known" in err:
        return [_key_unknown(host, timeout)]
    if "Permission denied" in err:
        return _auth_refused(host)
    last = err.strip().splitlines()[-1] if err.strip() else "ssh failed"
    return [Check("auth", "fail", last, "run: ssh -v to see why")]


def outcome_checks(
    host: InventoryHost, outcome: sshprobe.Outcome, settings: dict[str, Any], timeout: float
) -> list[Check]:
    """Every check, from the in-process client's outcome."""
    if outcome.failure == "reach":
        return [
            Check(
                "reach", "fail", f"{host.host}:{host.port}: {outcome.detail}",
                "check the address, the network path and that sshd runs",
            )
        ]  # fmt: skip
    checks = [Check("reach", "pass", f"{host.host}:{host.port} answers")]
    if outcome.failure == "host_key_changed":
        return [*checks, _key_changed(host, timeout)]
    if outcome.failure == "host_key_unknown":
        return [*checks, _key_unknown(host, timeout)]
    if outcome.failure == "auth":
        if "denied" in outcome.detail.lower():
            return checks + _auth_refused(host)
        return [*checks, Check("auth", "fail", outcome.detail, "run: ssh -v to see why")]
    probe = Probe(outcome.rc, outcome.stdout, "", outcome.sent_at, outcome.received_at)
    return checks + probe_checks(host, probe, settings)


def probe_checks(host: InventoryHost, probe: Probe, settings: dict[str, Any]) -> list[Check]:
    """Every check that reads the probe's output."""
    v = probe.values()

    def one(key: str) -> str:
        return v.get(key, [""])[0]

    checks = [Check("host_key", "pass", "matches known_hosts"), Check("auth", "pass", host.user)]
    if one("uid") == "0":
        checks.append(Check("sudo", "skip", "connected as root"))
    elif one("sudo") == "ok":
        checks.append(Check("sudo", "pass", "sudo -n works"))
    else:
        checks.append(
            Check(
                "sudo",
                "fail",
                f"{host.user} cannot sudo without a password",
                f"allow it: echo '{host.user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/clusterai",
            )
        )
    python = one("python")
    numbers = tuple(int(x) for x in python.split(".")[:2] if x.isdigit())
    if not python:
        wanted = interpreter(host)
        fix = "install python3" if wanted == "python3" else f"install it or fix {_INTERPRETER}"
        checks.append(Check("python", "fail", f"no {wanted} on the host", fix))
    elif numbers < MIN_PYTHON:
        checks.append(
            Check("python", "fail", f"python {python} is too old", "install python 3.8 or later")
        )
    else:
        checks.append(Check("python", "pass", f"{python} ({one('python_path')})"))
    checks.append(_os_check(one("os"), one("init"), settings))
    checks.append(_memory_check(host, one("mem_kb"), settings))
    checks.append(_disk_check(host, one("disk_kb"), one("disk_path"), settings))
    gpus = one("gpus") or "0"
    checks.append(Check("gpu", "pass", f"{gpus} NVIDIA GPU(s)" if gpus != "0" else "none"))
    checks.append(_ports_check(host, v, settings))
    checks.append(_clock_check(one("time"), probe))
    return checks


def _os_check(os_release: str, init: str, settings: dict[str, Any]) -> Check:
    names = {"debian": "Debian", "ubuntu": "Ubuntu", "rhel": "RedHat", "rocky": "Rocky"}
    distro, _, version = os_release.partition(" ")
    name = names.get(distro, distro or "unknown")
    major = version.split(".")[0]
    supported = settings["preflight_supported_os"]
    listed = ", ".join(f"{n} {'/'.join(map(str, vs))}" for n, vs in sorted(supported.items()))
    if init != "systemd":
        return Check("os", "fail", f"PID 1 is {init or 'unknown'}, not systemd", "use systemd")
    if major not in [str(x) for x in supported.get(name, [])]:
        return Check("os", "fail", f"{name} {version} is not supported", f"supported: {listed}")
    return Check("os", "pass", f"{name} {version}")


def _memory_check(host: InventoryHost, mem_kb: str, settings: dict[str, Any]) -> Check:
    variable = f"preflight_min_memory_mb_{host.kind}"
    need = int(settings[variable])
    have = int(mem_kb or 0) // 1024
    if have < need:
        return Check(
            "memory", "fail", f"{have} MiB, below {variable} ({need} MiB)", "add memory or lower it"
        )
    return Check("memory", "pass", f"{have} MiB")


def _disk_check(host: InventoryHost, disk_kb: str, path: str, settings: dict[str, Any]) -> Check:
    variable = f"preflight_min_free_disk_gb_{host.kind}"
    need = float(settings[variable])
    have = int(disk_kb or 0) / 1024 / 1024
    if have < need:
        return Check(
            "disk",
            "fail",
            f"{path} has {have:.1f} GiB free, below {variable} ({_number(need)} GiB)",
            "free some space or lower that variable",
        )
    return Check("disk", "pass", f"{have:.1f} GiB free at {path}")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _listen_address(hex_address: str) -> tuple[str, int]:
    import ipaddress

    address, _, port = hex_address.partition(":")
    raw = bytes.fromhex(address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip), int(port, 16)


def _ports_check(host: InventoryHost, v: dict[str, list[str]], settings: dict[str, Any]) -> Check:
    needed = needed_ports(host, settings)
    holders = dict(line.split(" ", 1) for line in v.get("holder", []) if " " in line)
    problems, ours = [], []
    for hex_address in v.get("listen", []):
        address, port = _listen_address(hex_address)
        if port not in needed or address not in (host.address, "0.0.0.0", "::"):
            continue
        unit, holder = needed[port], holders.get(hex_address, "-")
        # Ours means what the preflight role means: the socket's process runs in the unit
        # allowed to hold that port.
        if holder == unit:
            ours.append(f"{port} ({unit})")
        else:
            problems.append(f"{port} on {address} by {_holder_name(holder)}")
    if problems:
        return Check(
            "ports",
            "fail",
            f"held by another program: {', '.join(sorted(set(problems)))}",
            "stop that program or move it",
        )
    detail = f"free; already ours: {', '.join(sorted(set(ours)))}" if ours else "free"
    return Check("ports", "pass", detail)


def _holder_name(holder: str) -> str:
    if holder == "-":
        return "a process outside this host"
    if holder == "+":
        return "a process outside any unit"
    return f"unit {holder}"


def _clock_check(remote: str, probe: Probe) -> Check:
    try:
        remote_time = float(remote)
    except ValueError:
        return Check("clock", "warn", "could not read the host's clock")
    midpoint = (probe.sent_at + probe.received_at) / 2
    skew = remote_time - midpoint
    detail = f"{skew:+.2f} s from the controller"
    if abs(skew) >= SKEW_FAIL_S:
        return Check("clock", "fail", detail, "enable time sync (systemd-timesyncd or chrony)")
    if abs(skew) >= SKEW_WARN_S:
        return Check("clock", "warn", detail, "enable time sync (systemd-timesyncd or chrony)")
    return Check("clock", "pass", detail)


_INTERPRETER = "ansible_python_interpreter"


def interpreter(host: InventoryHost) -> str:
    """The Python Ansible will run modules with: ansible_python_interpreter when the
    inventory sets it to a path or a name (not a discovery keyword), else python3."""
    value = str(host.variables.get(_INTERPRETER) or "")
    if not value or value.startswith("auto") or "{" in value:
        return "python3"
    return value


def _fill(template: str, values: dict[str, str]) -> str:
    """``template`` with each placeholder word replaced, in one pass: a value that holds
    another placeholder's name (a models directory called PORTS) stays as it is."""
    return re.sub(r"\b(" + "|".join(values) + r")\b", lambda m: values[m.group(1)], template)


def probe_script(host: InventoryHost, settings: dict[str, Any]) -> str:
    models = str(settings["preflight_models_dir"])
    ports = needed_ports(host, settings)
    code = _fill(PYCODE, {"MODELS_DIR": json.dumps(models), "PORTS": json.dumps(sorted(ports))})
    return _fill(
        PROBE,
        {"PYCODE": _sh_quote(code), "MODELS_DIR": _sh_quote(models),
         "PYTHON": _sh_quote(interpreter(host)), "PORTS": " ".join(map(str, sorted(ports)))},
    )  # fmt: skip


def probe_host(
    host: InventoryHost, settings: dict[str, Any], accept_new: bool, timeout: float
) -> Probe:
    """The probe over OpenSSH's ssh, for hosts the in-process client does not take."""
    script = probe_script(host, settings)
    sent = time.time()
    try:
        done = subprocess.run(
            ssh_command(host, accept_new, timeout),
            input=script,
            capture_output=True,
            text=True,
            timeout=timeout * 4,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Probe(255, "", f"ssh: no answer within {timeout * 4:g} s", sent, time.time())
    return Probe(done.returncode, done.stdout, done.stderr, sent, time.time())


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def check_host(
    host: InventoryHost, defaults: dict[str, Any], accept_new: bool, timeout: float
) -> HostReport:
    report = HostReport(host.name, host.address)
    settings = settings_for(host, defaults)
    probe = probe_host(host, settings, accept_new, timeout)
    # One connection per host: reachability comes from ssh's own answer.
    unreachable = reach_failure(probe)
    if unreachable is not None:
        report.checks.append(unreachable)
        return report
    report.checks.append(Check("reach", "pass", f"{host.host}:{host.port} answers"))
    failed = connection_checks(host, probe, timeout)
    if failed is not None:
        report.checks.extend(failed)
        return report
    report.checks.extend(probe_checks(host, probe, settings))
    return report


async def _check(
    host: InventoryHost,
    defaults: dict[str, Any],
    accept_new: bool,
    timeout: float,
    threads: ThreadPoolExecutor,
) -> HostReport:
    # Imported here: asyncssh (with cryptography) is most of the CLI's start-up time, and
    # only validate needs it.
    from clusterai_runner.adapters import ssh as sshprobe

    options = sshprobe.options_for(host)
    if options is None:  # SSH options only OpenSSH knows: its ssh, in a thread
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(threads, check_host, host, defaults, accept_new, timeout)
    settings = settings_for(host, defaults)
    script = probe_script(host, settings)
    outcome = await sshprobe.run(host, options, script, accept_new, timeout)
    report = HostReport(host.name, host.address)
    report.checks.extend(outcome_checks(host, outcome, settings, timeout))
    return report


def validate(
    hosts: list[InventoryHost],
    parallel: int = 50,
    accept_new: bool = False,
    timeout: float = 10.0,
    on_done: Callable[[HostReport], None] | None = None,
) -> list[HostReport]:
    """Check every host, ``parallel`` at a time; reports in inventory order, each handed
    to ``on_done`` once it and those before it are done."""
    defaults = preflight_defaults()

    async def every() -> list[HostReport]:
        gate = asyncio.Semaphore(max(1, parallel))
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts) or 1))) as threads:

            async def one(host: InventoryHost) -> HostReport:
                async with gate:
                    return await _check(host, defaults, accept_new, timeout, threads)

            tasks = [asyncio.create_task(one(h)) for h in hosts]
            reports = []
            for task in tasks:
                report = await task
                if on_done is not None:
                    on_done(report)
                reports.append(report)
            return reports

    return asyncio.run(every())


def validate_targets(
    inventory: Path, limit: str | None = None, vault: Vault = NO_VAULT
) -> list[InventoryHost]:
    """The hosts ``validate`` checks: the inventory's, or those ``limit`` matches."""
    return load_inventory(inventory, limit, vault)
