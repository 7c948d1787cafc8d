"""What the modules on a site.yml cluster share (test_site.py's cluster, and
test_autoscaler_service.py's): a playbook run's recap, the gateway's keys and calls, the
monitoring API."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import REPO, address, ansible_playbook, monitoring_get, ssh


def converge(
    inventory: str, playbook: str | Path = "site.yml", *extra: str
) -> dict[str, dict[str, int]]:
    """Run a playbook; return each host's recap counters (the controller's own checks,
    which run as localhost, left out)."""
    run = ansible_playbook(inventory, playbook, *extra)
    assert run.returncode == 0, run.stdout[-4000:]
    recap = run.stdout[run.stdout.rindex("PLAY RECAP") :]
    return {
        host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counters)}
        for host, counters in re.findall(r"^(\S+)\s+: (.*)$", recap, re.M)
        if host != "localhost"
    }


GATEWAY_KEYS = REPO / "tests/integration/gateway_keys.yml"
GATEWAY_KEY = "cai_0a1b2c3d_itappkeyitappkeyitappkeyitappkeyitappkey"  # in that file
LOAD_KEY = "cai_4c0ad000_itloadkeyitloadkeyitloadkeyitloadkey"  # in it too, without limits


def get_json(cluster: dict[str, Any], url: str) -> Any:
    """Prometheus' or Alertmanager's API, over TLS with the monitoring login."""
    return json.loads(monitoring_get(cluster, url))


def gateway_call(
    cluster: dict[str, Any], path: str, body: dict[str, Any] | None = None, key: str = GATEWAY_KEY
) -> tuple[int, dict[str, str], Any]:
    """A request to the gateway on ctl1: status, headers, JSON body."""
    request = urllib.request.Request(
        f"http://{address(cluster, 'ctl1')}:8000{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.load(error)


def admin_key(cluster: dict[str, Any]) -> str:
    """The admin key the gateway role made and kept on ctl1 (root-only file)."""
    env = ssh(cluster, address(cluster, "ctl1"), "cat /etc/clusterai-gateway/gateway.env")
    return re.search(r"^CLUSTERAI_GATEWAY_ADMIN_KEY=(\S+)$", env.stdout, re.M).group(1)  # type: ignore[union-attr]
