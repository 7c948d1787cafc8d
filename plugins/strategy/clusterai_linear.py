# Copyright: Cluster AI contributors
# Apache License 2.0
"""Strategy ``clusterai_linear``: Ansible's linear strategy, run through Mitogen when it is
installed (requirements.txt pins it).

Mitogen keeps one Python interpreter per host alive for the whole run and sends modules
over it, instead of a new SSH command and interpreter per task; that is most of a no-op
converge's time. Without Mitogen this is exactly Ansible's ``linear``, so plain
``ansible-playbook`` from an environment without it still works.
"""

from __future__ import annotations

DOCUMENTATION = """
    name: clusterai_linear
    short_description: Ansible's linear strategy, through Mitogen when it is installed
    description:
        - Task execution is the same as the linear strategy's.
        - With Mitogen (ansible_mitogen) importable, connections and module execution go
          through Mitogen; otherwise this is Ansible's linear strategy unchanged.
    author: Cluster AI contributors
"""

try:
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError:
    from ansible.plugins.strategy.linear import StrategyModule as StrategyModule
else:
    _Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)

    class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):  # type: ignore[no-redef]
        """Mitogen's wrapper around Ansible's linear strategy."""
