# Copyright: Cluster AI contributors
# Apache License 2.0
from __future__ import annotations

DOCUMENTATION = r"""
name: clusterai_backends
short_description: The inference-backend catalogue of Cluster AI
description:
  - Returns C(clusterai_runner/backends.yml), one entry per value of
    C(clusterai_inference_backend), as a single mapping (use it with C(lookup), not C(query)).
  - A host's own port and URLs come from the C(clusterai_backend) filter.
"""

EXAMPLES = r"""
- name: Name the backends a worker may run
  ansible.builtin.debug:
    msg: "{{ lookup('clusterai_backends') | list }}"
"""

RETURN = r"""
_raw:
  description: The catalogue, backend name to its entry (role, api, port, port_variable, ...).
  type: dict
"""

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from ansible.plugins.lookup import LookupBase  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "filter"))
from clusterai_backends import catalogue  # noqa: E402


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: Any = None, **kwargs: Any) -> list[Any]:
        return [catalogue()]
