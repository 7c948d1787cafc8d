"""The preflight checks of ``clusterai validate``, as pure functions of a probe's output."""

from __future__ import annotations

from clusterai_runner.adapters.inventory import InventoryHost
from clusterai_runner.usecases.validate import (
    Probe,
    connection_checks,
    interpreter,
    preflight_defaults,
    probe_checks,
    reach_failure,
    settings_for,
)

WORKER = InventoryHost(
    name="w1",
    groups=("workers",),
    host="192.0.2.5",
    port=22,
    user="admin",
    key_file="/keys/id",
    ssh_args=("-o", "UserKnownHostsFile=/inv/known_hosts"),
    address="192.0.2.5",
    variables={"clusterai_inference_backend": "ollama"},
)


def probe(stdout: str, rc: int = 0, stderr: str = "", skew: float = 0.0) -> Probe:
    return Probe(rc, stdout, stderr, 1000.0 - skew, 1000.0 - skew)


GOOD = "\n".join(
    [
        "uid=1000",
        "sudo=ok",
        "python_path=/usr/bin/python3",
        "python=3.11.2",
        "os=debian 12",
        "init=systemd",
        "mem_kb=16000000",
        "disk_kb=104857600",
        "disk_path=/var/lib",
        "gpus=2",
        # 0.0.0.0:11434 (Ollama's port) and 127.0.0.1:9100: another address, not ours
        "listen=00000000:2CAA",
        "listen=0100007F:238C",
        # who holds them: the unit of the process with the socket open
        "holder=00000000:2CAA clusterai-ollama",
        "holder=0100007F:238C -",
        "time=1000.0",
    ]
)


def results(stdout: str, **variables: object) -> dict[str, tuple[str, str]]:
    host = WORKER if not variables else InventoryHost(**{
        **WORKER.__dict__, "variables": {**WORKER.variables, **variables}
    })  # fmt: skip
    settings = settings_for(host, preflight_defaults())
    return {c.name: (c.status, c.detail) for c in probe_checks(host, probe(stdout), settings)}


def test_a_good_host_passes_and_a_port_held_by_our_unit_is_fine() -> None:
    found = results(GOOD)
    assert {name: status for name, (status, _) in found.items()} == {
        "host_key": "pass", "auth": "pass", "sudo": "pass", "python": "pass", "os": "pass",
        "memory": "pass", "disk": "pass", "gpu": "pass", "ports": "pass", "clock": "pass",
    }  # fmt: skip
    assert found["ports"][1] == "free; already ours: 11434 (clusterai-ollama)"
    assert found["gpu"][1] == "2 NVIDIA GPU(s)"
    assert found["disk"][1] == "100.0 GiB free at /var/lib"
    assert found["python"][1] == "3.11.2 (/usr/bin/python3)"


def test_the_python_checked_is_the_one_ansible_will_use() -> None:
    def using(value: object) -> str:
        return interpreter(InventoryHost(**{
            **WORKER.__dict__, "variables": {"ansible_python_interpreter": value}
        }))  # fmt: skip

    assert interpreter(WORKER) == "python3"
    assert using("/opt/py/bin/python3.12") == "/opt/py/bin/python3.12"
    assert using("auto_silent") == "python3"
    assert using("{{ ansible_playbook_python }}") == "python3"
    missing = GOOD.replace("python=3.11.2", "python=")
    assert results(missing)["python"] == ("fail", "no python3 on the host")
    named = results(missing, ansible_python_interpreter="/opt/py/bin/python3.12")
    assert named["python"] == ("fail", "no /opt/py/bin/python3.12 on the host")


def test_each_problem_names_the_value_and_the_threshold() -> None:
    bad = (
        GOOD.replace("sudo=ok", "sudo=no")
        .replace("python=3.11.2", "python=3.6.9")
        .replace("os=debian 12", "os=ubuntu 20.04")
        .replace("mem_kb=16000000", "mem_kb=1024000")
        .replace("holder=00000000:2CAA clusterai-ollama", "holder=00000000:2CAA nginx")
    )
    found = results(bad, preflight_min_free_disk_gb_workers=500)
    assert found["sudo"] == ("fail", "admin cannot sudo without a password")
    assert found["python"] == ("fail", "python 3.6.9 is too old")
    assert found["os"] == ("fail", "Ubuntu 20.04 is not supported")
    assert found["memory"] == ("fail", "1000 MiB, below preflight_min_memory_mb_workers (2048 MiB)")
    assert found["disk"] == (
        "fail",
        "/var/lib has 100.0 GiB free, below preflight_min_free_disk_gb_workers (500 GiB)",
    )
    assert found["ports"] == ("fail", "held by another program: 11434 on 0.0.0.0 by unit nginx")
    # Our unit running is not enough: the socket must be its process's (as preflight says).
    outside = GOOD.replace("holder=00000000:2CAA clusterai-ollama", "holder=00000000:2CAA -")
    assert results(outside)["ports"] == (
        "fail",
        "held by another program: 11434 on 0.0.0.0 by a process outside this host",
    )


def test_clock_skew_warns_then_fails() -> None:
    host, settings = WORKER, settings_for(WORKER, preflight_defaults())
    for skew, status in ((0.5, "pass"), (5.0, "warn"), (120.0, "fail")):
        checks = probe_checks(host, probe(GOOD, skew=skew), settings)
        assert [c.status for c in checks if c.name == "clock"] == [status]


def test_ssh_failures_say_which_and_how_to_fix() -> None:
    changed = connection_checks(
        WORKER, probe("", 255, "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@"), 1
    )
    assert changed is not None and changed[0].name == "host_key"
    assert changed[0].fix.endswith("replace its line in /inv/known_hosts")
    denied = connection_checks(WORKER, probe("", 255, "admin@192.0.2.5: Permission denied"), 1)
    assert denied is not None
    assert (denied[1].name, denied[1].detail) == ("auth", "the host refused admin with /keys/id")
    assert connection_checks(WORKER, probe(GOOD), 1) is None


def test_reach_comes_from_sshs_own_answer() -> None:
    refused = reach_failure(
        probe("", 255, "ssh: connect to host 192.0.2.5 port 2222: Connection refused\r\n")
    )
    assert refused is not None
    assert (refused.status, refused.detail) == ("fail", "192.0.2.5:2222: Connection refused")
    assert reach_failure(probe("", 255, "admin@192.0.2.5: Permission denied (publickey).")) is None
    assert reach_failure(probe(GOOD)) is None


def test_the_python_probe_and_the_shell_probe_agree_on_this_machine() -> None:
    import subprocess

    from clusterai_runner.usecases.validate import probe_script

    def values(interpreter: str) -> dict[str, list[str]]:
        host = InventoryHost(**{
            **WORKER.__dict__,
            "variables": {**WORKER.variables, "ansible_python_interpreter": interpreter},
        })  # fmt: skip
        script = probe_script(host, settings_for(host, preflight_defaults()))
        done = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True)
        return Probe(done.returncode, done.stdout, done.stderr, 0, 0).values()

    python, shell = values("/usr/bin/python3"), values("/nonexistent/python3")
    assert python["python"][0].startswith("3.") and shell["python"] == [""]
    for key in ("uid", "os", "init", "disk_path", "mem_kb", "gpus", "listen", "holder"):
        assert sorted(python.get(key, [])) == sorted(shell.get(key, [])), key
    assert abs(int(python["disk_kb"][0]) - int(shell["disk_kb"][0])) < 1024 * 1024
    assert abs(float(python["time"][0]) - float(shell["time"][0])) < 5


def test_the_in_process_clients_outcomes_become_the_same_checks() -> None:
    from clusterai_runner.adapters.ssh import Outcome
    from clusterai_runner.usecases.validate import outcome_checks

    settings = settings_for(WORKER, preflight_defaults())

    def checks(outcome: Outcome) -> dict[str, tuple[str, str]]:
        return {c.name: (c.status, c.detail) for c in outcome_checks(WORKER, outcome, settings, 1)}

    refused = checks(Outcome(255, "", 0, 0, "reach", "Connection refused"))
    assert refused == {"reach": ("fail", "192.0.2.5:22: Connection refused")}
    denied = checks(Outcome(255, "", 0, 0, "auth", "Permission denied for user admin"))
    assert denied["host_key"] == ("pass", "matches known_hosts")
    assert denied["auth"] == ("fail", "the host refused admin with /keys/id")
    good = checks(Outcome(0, GOOD, 1000.0, 1000.0))
    assert {name: status for name, (status, _) in good.items()} == {
        "reach": "pass", "host_key": "pass", "auth": "pass", "sudo": "pass", "python": "pass",
        "os": "pass", "memory": "pass", "disk": "pass", "gpu": "pass", "ports": "pass",
        "clock": "pass",
    }  # fmt: skip


def test_a_value_named_like_a_placeholder_reaches_the_host_as_it_is() -> None:
    from clusterai_runner.usecases.validate import probe_script

    host = InventoryHost(**{
        **WORKER.__dict__,
        "variables": {**WORKER.variables, "preflight_models_dir": "/srv/PORTS/UNITS"},
    })  # fmt: skip
    script = probe_script(host, settings_for(host, preflight_defaults()))
    assert script.count("/srv/PORTS/UNITS") == 2  # in the Python probe and in the shell one
