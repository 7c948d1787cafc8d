# Copyright: Cluster AI contributors
# Apache License 2.0
"""Strategy ``clusterai_linear``: Ansible's linear strategy, run through Mitogen when it is
installed (requirements.txt pins it).

Mitogen keeps one Python interpreter per host alive for the whole run and sends modules
over it, instead of a new SSH command and interpreter per task; that is most of a no-op
converge's time. Without Mitogen this is exactly Ansible's ``linear``, so plain
``ansible-playbook`` from an environment without it still works. Mitogen's pinning of
processes to CPUs is left off (see below).
"""

from __future__ import annotations

DOCUMENTATION = """
    name: clusterai_linear
    short_description: Ansible's linear strategy, through Mitogen when it is installed
    description:
        - Task execution is the same as the linear strategy's.
        - With Mitogen (ansible_mitogen) importable, connections and module execution go
          through Mitogen; otherwise this is Ansible's linear strategy unchanged.
        - Mitogen's pinning of processes to CPUs is off; the kernel places them.
    author: Cluster AI contributors
"""

try:
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError:
    from ansible.plugins.strategy.linear import StrategyModule as StrategyModule
else:
    import ansible_mitogen.affinity

    # Mitogen pins its processes to CPUs. On a machine of 2 or 3 CPUs it keeps CPU 0 for
    # its connection multiplexer and pins the top-level process, every task worker and
    # their children (ssh, local commands) to the others: on 2 CPUs all of a run's
    # Ansible work shares CPU 1, and so do the runs beside it (the web app's jobs, the
    # test suite's modules), while CPU 0 idles (the suite's CI run: CPU 0 64 % busy, CPU 1
    # 94 %). Its base Policy pins nothing, leaving placement to the kernel: three no-op
    # converges side by side took 52 s instead of 76 s on 2 CPUs, one alone 25.5 s
    # instead of 28 s.
    ansible_mitogen.affinity.policy = ansible_mitogen.affinity.Policy()
    _Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)

    class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):  # type: ignore[no-redef]
        """Mitogen's wrapper around Ansible's linear strategy."""
