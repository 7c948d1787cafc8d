#!/usr/bin/env python3
"""Bench: ``clusterai validate`` versus ``ansible all -m ping`` versus bare ``ssh true``.

200 hosts on loopback, in one run, at the same parallelism (50 by default):

1. a network namespace made for the bench (``ip netns add``, ``lo`` up), where one sshd
   listens on 0.0.0.0 and so answers on every 127.x address (sshd refuses more than 16
   listen addresses otherwise);
2. an inventory of 200 hosts 127.1.0.1..200 (one control host, the rest workers), with
   known_hosts holding the bench's host key for every address: host key checking stays
   on;
3. inside the namespace, timed: ``clusterai validate`` (all its checks), ``ansible all -m
   ping`` with ``--forks`` equal to the parallelism and stock settings, and the floor, 200
   bare ``ssh HOST true`` through ``xargs -P``.

The hosts are this machine's root account; sshd runs in a private mount namespace where
root's ``~/.bashrc`` is empty, as on a server (this machine's runs ``pyenv init`` for every
command sshd starts, which dominated every figure before).

Prints the three times and the ratios, and for each the CPU time spent by its own
processes (the clients: ssh, ansible's workers, clusterai), apart from sshd's, which
here runs on the same two cores but on a real cluster runs on the hosts. Not a test:
timings never gate CI. Needs root, ``ip`` and an OpenSSH server binary
(``/usr/sbin/sshd``; on Debian install openssh-server with a policy-rc.d that keeps it
from starting on the host). Everything
it starts runs in its namespace and is stopped, by PID, at the end.

    sudo .venv/bin/python bench/validate_vs_ping.py [--hosts 200] [--parallel 50]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SSHD = Path("/usr/sbin/sshd")
CHECK_NAMES = ("reach", "host_key", "auth", "sudo", "python", "os", "memory", "disk", "gpu")
CHECK_NAMES += ("ports", "clock")


def sh(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    namespace: str, command: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)
) -> tuple[float, float, str]:
    """Wall time, CPU time of the command's own process tree, and its output. sshd is
    reaped only at the end, so its CPU time is not in any command's."""
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, *command],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in ok:
        tail = (done.stdout + done.stderr)[-1500:]
        sys.exit(f"error: bench: {command[0]} failed (rc {done.returncode}):\n{tail}")
    return elapsed, _children_cpu() - cpu, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: bench: needs root (it makes a network namespace)", file=sys.stderr)
        return 2
    if not SSHD.exists() or shutil.which("ip") is None:
        print(
            "error: bench: needs /usr/sbin/sshd and ip (apt-get install openssh-server"
            " iproute2, with a policy-rc.d that keeps sshd from starting on the host)",
            file=sys.stderr,
        )
        return 2
    namespace = f"clusterai-bench-{os.getpid()}"
    addresses = [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(args.hosts)]
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(scratch / "host_key"))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(scratch / "id"))
        (scratch / "authorized_keys").write_text((scratch / "id.pub").read_text())
        host_public = (scratch / "host_key.pub").read_text().split()[:2]
        (scratch / "known_hosts").write_text(
            "".join(f"{a} {' '.join(host_public)}\n" for a in addresses)
        )
        config = scratch / "sshd_config"
        config.write_text(
            f"ListenAddress 0.0.0.0\nPort 22\nHostKey {scratch / 'host_key'}\n"
            f"AuthorizedKeysFile {scratch / 'authorized_keys'}\n"
            f"PidFile {scratch / 'sshd.pid'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "UsePAM no\nStrictModes no\nMaxStartups 1000\nMaxSessions 1000\n"
            "Subsystem sftp internal-sftp\n"
        )
        os.chmod(scratch, 0o755)
        inventory = scratch / "hosts.yml"
        common = (
            f"-o UserKnownHostsFile={scratch / 'known_hosts'} -o StrictHostKeyChecking=yes"
            " -o IdentitiesOnly=yes"
        )
        lines = [
            "all:",
            "  vars:",
            "    ansible_user: root",
            f"    ansible_ssh_private_key_file: {scratch / 'id'}",
            f"    ansible_ssh_common_args: '{common}'",
            "    clusterai_inference_backend: llamacpp",
            "    ansible_python_interpreter: /usr/bin/python3",
            "  children:",
            "    control:",
            "      hosts:",
            f"        h1: {{ansible_host: {addresses[0]}, clusterai_address: {addresses[0]}}}",
            "    workers:",
            "      hosts:",
        ]
        lines += [
            f"        h{i + 1}: {{ansible_host: {a}, clusterai_address: {a}}}"
            for i, a in enumerate(addresses)
            if i
        ]
        inventory.write_text("\n".join(lines) + "\n")
        stock = scratch / "stock.cfg"
        stock.write_text("[defaults]\nhost_key_checking = True\n")
        (scratch / "ssh_targets").write_text("\n".join(addresses) + "\n")

        sh("ip", "netns", "add", namespace)
        sshd: subprocess.Popen[str] | None = None
        try:
            sh("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
            os.makedirs("/run/sshd", exist_ok=True)
            # The hosts are this machine's root account, whose ~/.bashrc bash reads for
            # every command sshd runs (Debian builds bash so). A workstation's rc file
            # (here it runs `pyenv init` twice, about 60 ms of CPU each time) is no
            # server's: sshd gets a private mount namespace where it reads as empty,
            # for all three contenders alike.
            masked = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                      'mount --bind /dev/null "$HOME/.bashrc" && exec "$0" "$@"']  # fmt: skip
            rc_file = Path.home() / ".bashrc"
            sshd = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    namespace,
                    *(masked if rc_file.exists() else []),
                    str(SSHD),
                    "-D",
                    "-e",
                    "-f",
                    str(config),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            time.sleep(1.0)
            if sshd.poll() is not None:
                sys.exit("error: bench: sshd did not start in the namespace")
            # Ansible's ssh masters (ControlPersist) in a directory of this run's own: a
            # master left by an earlier run would otherwise answer for a dead sshd.
            env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(stock),
                   "ANSIBLE_SSH_CONTROL_PATH_DIR": str(scratch / "cp")}  # fmt: skip
            ssh_options = (
                f"ssh -i {scratch / 'id'} -o BatchMode=yes {common} -o ControlMaster=no"
                " root@{} true"
            )
            print(f"{args.hosts} hosts, parallelism {args.parallel}:", file=sys.stderr)
            floor, floor_cpu, _ = timed(
                namespace,
                [
                    "sh",
                    "-c",
                    f"xargs -P {args.parallel} -I{{}} {ssh_options} < {scratch / 'ssh_targets'}",
                ],
                env,
            )
            print(f"  bare ssh true      {floor:7.1f} s", file=sys.stderr)
            # The bench's hosts are this machine seen through sshd: its checks may fail
            # (no systemd here, say; exit 3), but every host must have been reached and
            # probed, so every check must have run.
            ours, ours_cpu, report = timed(
                namespace,
                [
                    str(BIN / "clusterai"),
                    "validate",
                    "-i",
                    str(inventory),
                    "--parallel",
                    str(args.parallel),
                    "--json",
                ],
                env,
                ok=(0, 3),
            )
            checked = json.loads(report)["hosts"]
            complete = [h for h in checked if len(h["checks"]) == len(CHECK_NAMES)]
            if len(complete) != args.hosts:
                sys.exit(f"error: bench: validate probed {len(complete)} of {args.hosts} hosts")
            print(f"  clusterai validate {ours:7.1f} s", file=sys.stderr)
            ping, ping_cpu, _ = timed(
                namespace,
                [
                    str(BIN / "ansible"),
                    "all",
                    "-i",
                    str(inventory),
                    "-m",
                    "ansible.builtin.ping",
                    "--forks",
                    str(args.parallel),
                ],
                env,
            )
        finally:
            if sshd is not None:
                sshd.terminate()
                sshd.wait(timeout=10)
            subprocess.run(["ip", "netns", "delete", namespace], check=False)
    print(f"{args.hosts} loopback hosts, parallelism {args.parallel}, one run:")
    print(f"  ansible all -m ping  {ping:7.1f} s   client CPU {ping_cpu:7.1f} s")
    print(
        f"  clusterai validate   {ours:7.1f} s   client CPU {ours_cpu:7.1f} s"
        f"   ({ping / ours:.1f}x faster than ping; {ping_cpu / ours_cpu:.1f}x less client CPU)"
    )
    print(
        f"  bare ssh HOST true   {floor:7.1f} s   client CPU {floor_cpu:7.1f} s"
        f"   (validate is {ours / floor:.2f}x the floor)"
    )
    print(f"  ping / floor = {ping / floor:.1f}x: the most any validate could gain over ping here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
