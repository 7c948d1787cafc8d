"""A test fixture: an EC2 instance's machine, as a sandbox host at the address moto gave
it, set up from its user-data the way cloud-init does on a Debian AMI.

``Instances.boot`` is the harness's ``on_launch``: it boots a one-host sandbox named after
the address (``clusterai sandbox up --first-address``), then does what cloud-init's
modules do with the user-data ``clusterai cloud`` sends (usecases/cloud.py, user_data):
the host name; the default user (``admin`` on Debian's AMIs) with password-less sudo and
the ``ssh_authorized_keys``; ``ssh_deletekeys`` and the ``ssh_keys`` host key; then sshd
restarted. Only those keys of the document are read, and any other key fails the boot:
the user-data must hold nothing else. With a ``Metadata`` (tests/cloud/metadata.py), each
instance's metadata is served to its host from its boot to its end.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from typing import Any

import yaml

from tests.cloud.metadata import Metadata
from tests.helpers import run_cli, ssh

KNOWN = {"hostname", "ssh_authorized_keys", "ssh_deletekeys", "ssh_genkeytypes", "ssh_keys"}


def setup_script(document: dict[str, Any], user: str) -> str:
    """The shell script that applies ``document`` as cloud-init's modules would."""
    extra = set(document) - KNOWN
    if extra:
        raise ValueError(f"user-data holds more than it should: {sorted(extra)}")
    host = shlex.quote(str(document["hostname"]))
    keys = "\n".join(document["ssh_authorized_keys"])
    host_keys = document["ssh_keys"]
    login = shlex.quote(user)
    return f"""set -eu
hostname {host}
echo {host} > /etc/hostname
id -u {login} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {login}
echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users
chmod 0440 /etc/sudoers.d/90-cloud-init-users
home=$(getent passwd {login} | cut -d: -f6)
install -d -m 0700 -o {login} -g {login} "$home/.ssh"
cat > "$home/.ssh/authorized_keys" <<'KEYS'
{keys}
KEYS
chown {login}:{login} "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
{"rm -f /etc/ssh/ssh_host_*" if document.get("ssh_deletekeys") else ":"}
cat > /etc/ssh/ssh_host_ed25519_key <<'KEY'
{host_keys["ed25519_private"].strip()}
KEY
chmod 0600 /etc/ssh/ssh_host_ed25519_key
echo {shlex.quote(host_keys["ed25519_public"].strip())} > /etc/ssh/ssh_host_ed25519_key.pub
systemctl restart ssh
"""


class Instances:
    """The sandbox hosts standing in for one test's instances."""

    def __init__(self, user: str, metadata: Metadata | None = None) -> None:
        self.user = user
        self.metadata = metadata
        self.sandboxes: dict[str, str] = {}  # instance id -> sandbox name
        # instance id -> time.monotonic() when its boot began, its host answered, and its
        # user-data was applied (bench/cloud.py splits the launch with them)
        self.timings: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def boot(self, instance_id: str, address: str, user_data: str) -> None:
        assert user_data.startswith("#cloud-config\n"), user_data[:40]
        name = "ec2-" + address.replace(".", "-")
        times = {"started": time.monotonic()}
        with self._lock:
            self.sandboxes[instance_id] = name
            self.timings[instance_id] = times
        if self.metadata is not None:
            self.metadata.serve(instance_id, name)
        booted = run_cli("sandbox", "up", "--name", name, "--hosts", "1",
                         "--first-address", address, "--json", timeout=300)  # fmt: skip
        if booted.code != 0:
            raise RuntimeError(f"sandbox up: {booted.stderr.strip()[-500:]}")
        times["booted"] = time.monotonic()
        status = json.loads(booted.stdout)
        script = setup_script(yaml.safe_load(user_data), self.user)
        done = ssh(status, address, "sh", "-c", shlex.quote(script))
        if done.returncode != 0:
            raise RuntimeError(f"cloud-init stand-in: {done.stderr.strip()[-500:]}")
        times["set_up"] = time.monotonic()

    def terminate(self, instance_id: str) -> None:
        """The harness's ``on_terminate``: the instance's machine goes."""
        with self._lock:
            name = self.sandboxes.get(instance_id)
        if self.metadata is not None:
            self.metadata.stop(instance_id)
        if name is not None:
            run_cli("sandbox", "down", "--name", name)

    def remove(self) -> None:
        """Take every instance's sandbox down (what terminating them in moto cannot do)."""
        if self.metadata is not None:
            self.metadata.close()
        for name in sorted(set(self.sandboxes.values())):
            run_cli("sandbox", "down", "--name", name)
