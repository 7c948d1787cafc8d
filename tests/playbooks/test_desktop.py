"""A desktop worker's owner signal, rendered from the desktop role's template and run
against stand-in ``loginctl`` and ``nvidia-smi`` programs (a real graphical session and a
real GPU are not on these machines); and Wake-on-LAN's magic packet, from ``clusterai
autoscale wake`` to a UDP listener on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clusterai_runner.adapters.wol import magic_packet
from tests.helpers import REPO, ansible_playbook, run_cli

PLAY = """\
- name: Render the desktop role's owner signal as the role does
  hosts: localhost
  gather_facts: false
  vars_files: [{defaults}]
  tasks:
    - name: Render it
      ansible.builtin.template:
        src: {template}
        dest: {dest}
        mode: "0755"
"""


@pytest.fixture(scope="module")
def owner_active(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("desktop")
    play = folder / "render.yml"
    script = folder / "owner-active"
    play.write_text(PLAY.format(defaults=REPO / "roles/desktop/defaults/main.yml",
                                template=REPO / "roles/desktop/templates/owner-active.j2",
                                dest=script))  # fmt: skip
    python = f"ansible_python_interpreter={sys.executable}"
    done = ansible_playbook("localhost,", play, "-c", "local", "-e", python, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    return script


def stand_in(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def ask(script: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{folder}:/usr/bin:/bin",
        "CLUSTERAI_DESKTOP_CLAIM": str(folder / "claimed"),
    }
    return subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=30,
                          check=False)  # fmt: skip


SESSION = """\
case "$1" in
  list-sessions) echo "  3 1000 ada seat0 tty2"; echo "  7 1001 bob" ;;
  show-session)
    if [ "$2" = 3 ]; then
      printf 'Type=%s\\nState=active\\nRemote=no\\nClass=user\\nName=ada\\n' "$TYPE"
    else printf 'Type=tty\\nState=online\\nRemote=yes\\nClass=user\\nName=bob\\n'; fi ;;
esac
"""


def test_the_owner_is_away_until_a_claim_a_graphical_session_or_a_gpu_process(
    owner_active: Path, tmp_path: Path
) -> None:
    assert ask(owner_active, tmp_path).returncode == 1  # no stand-ins: nothing in use
    (tmp_path / "claimed").write_text("ada\n")
    claimed = ask(owner_active, tmp_path)
    assert (claimed.returncode, claimed.stdout) == (0, "claimed by ada (clusterai-desktop claim)\n")
    (tmp_path / "claimed").unlink()

    stand_in(tmp_path, "loginctl", "TYPE=tty\n" + SESSION)
    assert ask(owner_active, tmp_path).returncode == 1  # a text console, a remote login
    stand_in(tmp_path, "loginctl", "TYPE=wayland\n" + SESSION)
    seated = ask(owner_active, tmp_path)
    assert (seated.returncode, seated.stdout) == (0, "a graphical session of ada is active\n")
    (tmp_path / "loginctl").unlink()

    # A process on the GPU: this test's own, owned by a user not among desktop_own_users.
    me = os.getpid()
    stand_in(tmp_path, "nvidia-smi", f'echo "{me}, blender"\n')
    gpu = ask(owner_active, tmp_path)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    assert (gpu.returncode, gpu.stdout) == (0, f"blender of {user} uses the GPU\n")
    stand_in(tmp_path, "nvidia-smi", 'echo "999999999, gone"\n')  # a process that ended
    assert ask(owner_active, tmp_path).returncode == 1


def test_the_magic_packet_reaches_a_loopback_listener_with_the_hosts_mac(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"clusterai_inference_backend": "llamacpp", "gateway_admin_key": "k" * 24,
                 "autoscale_pools": [{"name": "desk", "kind": "desktop",
                                      "wol": {"address": "127.0.0.1", "port": port}}]},
        "children": {
            "control": {"hosts": {"ctl1": {"ansible_host": "127.0.99.1",
                                           "clusterai_address": "127.0.99.1"}}},
            "workers": {"children": {"desktop": {"hosts": {"studio1": {
                "ansible_host": "127.0.99.2", "clusterai_address": "127.0.99.2",
                "desktop_mac": "3C-7C-3F-12-34-56"}}}}},
        },
    }}))  # fmt: skip
    with listener:
        woken = run_cli("autoscale", "wake", "-i", str(inventory), "studio1", "--json",
                        env={"CLUSTERAI_STATE_DIR": str(tmp_path / "state")})  # fmt: skip
        assert woken.code == 0, woken.stderr
        packet, _sender = listener.recvfrom(1024)
    assert json.loads(woken.stdout) == {"host": "studio1", "mac": "3c:7c:3f:12:34:56",
                                        "address": "127.0.0.1", "port": port}  # fmt: skip
    assert packet == b"\xff" * 6 + bytes.fromhex("3c7c3f123456") * 16
    assert packet == magic_packet("3c:7c:3f:12:34:56") and len(packet) == 102
