# Copyright: Cluster AI contributors
# Apache License 2.0
from __future__ import annotations

DOCUMENTATION = r"""
name: clusterai_cache_dir
short_description: The controller's Cluster AI cache directory
description:
  - C(CLUSTERAI_CACHE_DIR) when set; else C($XDG_CACHE_HOME/clusterai) when C(XDG_CACHE_HOME)
    is an absolute path (the XDG specification says to ignore a relative one); else
    C(~/.cache/clusterai). The same directory the C(clusterai) CLI uses for its caches, so
    the roles' downloads and the sandbox's root file system share one place.
"""

EXAMPLES = r"""
- name: Say where the controller keeps its downloads
  ansible.builtin.debug:
    msg: "{{ lookup('clusterai_cache_dir') }}"
"""

RETURN = r"""
_raw:
  description: The directory, as an absolute path (it may not exist yet).
  type: str
"""

import os  # noqa: E402
from typing import Any  # noqa: E402

from ansible.plugins.lookup import LookupBase  # noqa: E402


def cache_dir(env: Any) -> str:
    """As clusterai_runner.config.Settings.cache_dir (a test checks they agree)."""
    if env.get("CLUSTERAI_CACHE_DIR"):
        return str(env["CLUSTERAI_CACHE_DIR"])
    xdg = env.get("XDG_CACHE_HOME", "")
    base = (
        xdg
        if xdg and os.path.isabs(xdg)
        else os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    )
    return os.path.join(base, "clusterai")


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: Any = None, **kwargs: Any) -> list[Any]:
        return [cache_dir(os.environ)]
