"""The one OpenSSH command-line builder: host key checking on, our options before the
inventory's (ssh takes the first value of an option), nothing that can ask a question."""

from __future__ import annotations

from clusterai_runner.adapters.openssh import openssh_argv


def test_host_key_checking_is_on_and_comes_before_the_inventorys_options() -> None:
    argv = openssh_argv(
        "192.0.2.5", "true", port=2222, user="ops", extra=["-o", "StrictHostKeyChecking=no"]
    )
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    assert argv.index("StrictHostKeyChecking=yes") < argv.index("StrictHostKeyChecking=no")
    assert argv[-2:] == ["192.0.2.5", "true"]
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "ops"


def test_a_sandbox_command_uses_only_its_own_known_hosts_and_key() -> None:
    argv = openssh_argv(
        "127.0.10.1", "systemctl", "is-system-running", user="root", key_file="/k/id",
        known_hosts="/k/known_hosts", connect_timeout=5, quiet=True,
    )  # fmt: skip
    text = " ".join(argv)
    assert "UserKnownHostsFile=/k/known_hosts -o GlobalKnownHostsFile=/dev/null" in text
    assert "-i /k/id -o IdentitiesOnly=yes" in text
    assert "ConnectTimeout=5" in text and "LogLevel=ERROR" in text


def test_accept_new_and_no_multiplexing_for_validate() -> None:
    argv = openssh_argv("h", accept_new=True, multiplex=False, connect_timeout=0.2)
    text = " ".join(argv)
    assert "StrictHostKeyChecking=accept-new" in text
    assert "ControlMaster=no -o ControlPath=none" in text
    assert "ConnectTimeout=1" in text  # never 0, which would mean no timeout
