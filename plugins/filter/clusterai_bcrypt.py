# Copyright: Cluster AI contributors
# Apache License 2.0
"""The ``clusterai_bcrypt`` filter: a bcrypt hash for Prometheus-style web configurations.

``password | clusterai_bcrypt(seed)`` gives ``$2b$10$...``, what exporter-toolkit's
``basic_auth_users`` wants. The salt comes from the password and ``seed`` (the host and
service), so that a second run writes the same file and changes nothing, while the same
password gives another hash on each host and service. Cost 10: the services check it
on every scrape.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from ansible.errors import AnsibleFilterError

COST = 10
# bcrypt's base64 alphabet for the same 6-bit values as the standard one.
_TO_BCRYPT = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
)


def clusterai_bcrypt(password: Any, seed: Any) -> str:
    import bcrypt  # requirements.txt; imported here so other filters load without it

    secret = str(password).encode()
    if not secret:
        raise AnsibleFilterError("clusterai_bcrypt: the password is empty")
    if len(secret) > 72:
        raise AnsibleFilterError("clusterai_bcrypt: bcrypt takes passwords of 72 bytes at most")
    raw = hmac.new(secret, str(seed).encode(), hashlib.sha256).digest()[:16]
    salt = base64.b64encode(raw).decode()[:22].translate(_TO_BCRYPT)
    return bcrypt.hashpw(secret, f"$2b${COST:02d}${salt}".encode()).decode()


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"clusterai_bcrypt": clusterai_bcrypt}
