"""Pure logic of the sandbox: names, addresses, plans, state files, inventory."""

import json
from pathlib import Path

import pytest
import yaml

from clusterai_runner.config import Settings
from clusterai_runner.errors import UsageError
from clusterai_runner.sandbox import checks, core, host, inventory, network


def nothing_listens(_address: str, _port: int) -> bool:
    """Unit tests never look at this machine's listeners (see tests/unit/conftest.py)."""
    return False


def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"HOME": str(tmp_path), "CLUSTERAI_STATE_DIR": str(tmp_path / "s")})


@pytest.mark.parametrize("name", ["default", "ci-2", "a", "x" * 24])
def test_good_names(name: str) -> None:
    core.check_name(name)


@pytest.mark.parametrize("name", ["", "Default", "2fast", "a_b", "a/b", "..", "x" * 25])
def test_bad_names(name: str) -> None:
    with pytest.raises(UsageError, match="is not a valid sandbox name"):
        core.check_name(name)


def test_host_names_are_one_control_then_workers() -> None:
    assert core.host_names(3) == [
        ("ctl1", "control"),
        ("worker1", "workers"),
        ("worker2", "workers"),
    ]
    assert core.host_names(1) == [("ctl1", "control")]


def test_addresses_are_consecutive_in_one_range() -> None:
    assert core.addresses_from("127.0.20.1", 3) == ["127.0.20.1", "127.0.20.2", "127.0.20.3"]
    assert core.addresses_from("127.0.20.250", 5)[-1] == "127.0.20.254"


@pytest.mark.parametrize(
    ("first", "count", "message"),
    [
        ("127.0.20", 1, "is not an IPv4 address"),
        ("10.0.0.1", 1, "is not in 127.0.0.0/8"),
        ("127.0.20.0", 1, "do not fit"),
        ("127.0.20.250", 6, "do not fit"),
    ],
)
def test_bad_first_addresses(first: str, count: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        core.addresses_from(first, count)


def write_state(root: Path, name: str, first: str, count: int) -> None:
    layout = core.Layout(root / "sandboxes", name)
    layout.directory.mkdir(parents=True)
    hosts = tuple(
        core.HostRecord(n, a, g)
        for (n, g), a in zip(core.host_names(count), core.addresses_from(first, count), strict=True)
    )
    layout.state.write_text(core.SandboxRecord(name, 22, hosts, root / "rootfs").to_json())


def test_a_new_sandbox_gets_the_first_free_range(tmp_path: Path) -> None:
    write_state(tmp_path / "s", "one", "127.0.10.1", 2)
    sandboxes = core.Sandboxes(settings(tmp_path), in_use=nothing_listens)
    plan = sandboxes._plan("two", 2, None, None, 22)
    assert [h.address for h in plan] == ["127.0.11.1", "127.0.11.2"]


def test_a_range_in_use_by_someone_else_is_skipped(tmp_path: Path) -> None:
    asked: list[tuple[str, int]] = []

    def only_10_2(address: str, port: int) -> bool:
        asked.append((address, port))
        return address == "127.0.10.2"

    plan = core.Sandboxes(settings(tmp_path), in_use=only_10_2)._plan("two", 2, None, None, 2222)
    assert plan[0].address == "127.0.11.1"
    assert ("127.0.10.2", 2222) in asked


def test_explicit_addresses_may_not_overlap_another_sandbox(tmp_path: Path) -> None:
    write_state(tmp_path / "s", "one", "127.0.10.1", 3)
    sandboxes = core.Sandboxes(settings(tmp_path), in_use=nothing_listens)
    with pytest.raises(UsageError, match=r"127\.0\.10\.3 belongs to sandbox 'one'"):
        sandboxes._plan("two", 2, None, "127.0.10.3", 22)


def test_growing_keeps_existing_hosts_and_shrinking_is_refused(tmp_path: Path) -> None:
    write_state(tmp_path / "s", "one", "127.0.30.1", 3)
    sandboxes = core.Sandboxes(settings(tmp_path), in_use=nothing_listens)
    existing = sandboxes.load("one")
    grown = sandboxes._plan("one", 4, existing, None, 22)
    assert grown[:3] == existing.hosts
    assert grown[3] == core.HostRecord("worker3", "127.0.30.4", "workers")
    with pytest.raises(UsageError, match="already has 3 hosts, more than 2"):
        sandboxes._plan("one", 2, existing, None, 22)
    with pytest.raises(UsageError, match=r"already starts at 127\.0\.30\.1"):
        sandboxes._plan("one", 3, existing, "127.0.31.1", 22)


def test_unknown_sandbox_names_the_existing_ones(tmp_path: Path) -> None:
    write_state(tmp_path / "s", "one", "127.0.10.1", 1)
    with pytest.raises(UsageError) as raised:
        core.Sandboxes(settings(tmp_path), in_use=nothing_listens).load("nope")
    assert str(raised.value) == (
        "sandbox 'nope': no such sandbox (existing: one) "
        "(create it with `clusterai sandbox up --name nope`)"
    )


def test_state_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    write_state(tmp_path / "s", "one", "127.0.10.1", 1)
    state = tmp_path / "s/sandboxes/one/sandbox.json"
    data = json.loads(state.read_text())
    state.write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(UsageError, match="state version 99 is not 1"):
        core.Sandboxes(settings(tmp_path), in_use=nothing_listens).load("one")
    state.write_text("{not json")
    with pytest.raises(UsageError, match="unreadable sandbox state"):
        core.Sandboxes(settings(tmp_path), in_use=nothing_listens).load("one")


def test_status_json_has_the_documented_keys(tmp_path: Path) -> None:
    status = core.SandboxStatus(
        name="x",
        directory=tmp_path,
        inventory=tmp_path / "inventory.yml",
        ssh_key=tmp_path / "id_ed25519",
        known_hosts=tmp_path / "known_hosts",
        ssh_port=22,
        hosts=(core.SandboxHostStatus("ctl1", "127.0.10.1", "control", "running", 42),),
    )
    data = status.to_json()
    assert set(data) >= {"name", "inventory", "ssh_key", "known_hosts", "hosts"}
    assert data["hosts"] == [
        {"name": "ctl1", "address": "127.0.10.1", "group": "control", "state": "running", "pid": 42}
    ]
    json.dumps(data)


def test_inventory_groups_hosts_and_keeps_host_key_checking(tmp_path: Path) -> None:
    hosts = [
        core.HostRecord("ctl1", "127.0.10.1", "control"),
        core.HostRecord("worker1", "127.0.10.2", "workers"),
    ]
    made = inventory.Secrets("k" * 43, "m" * 43, "w" * 43, "cai_0123abcd_" + "a" * 43)
    text = inventory.render("demo", hosts, 2222, tmp_path / "key", tmp_path / "kh", made)
    data = yaml.safe_load(text)["all"]
    assert data["vars"]["clusterai_backend_api_key"] == "k" * 43
    assert data["vars"]["clusterai_monitoring_password"] == "m" * 43
    assert data["vars"]["web_admin_password"] == "w" * 43
    assert data["vars"]["gateway_api_keys"] == [{"name": "sandbox", "key": made.api_key}]
    assert data["vars"]["firewall_allow"] == ["127.0.0.1"]
    assert data["children"]["control"]["hosts"] == {
        "ctl1": {
            "ansible_host": "127.0.10.1",
            "clusterai_address": "127.0.10.1",
            "clusterai_loopback_address": "127.0.10.1",
        }
    }
    assert list(data["children"]["workers"]["hosts"]) == ["worker1"]
    assert data["vars"]["ansible_port"] == 2222
    assert "StrictHostKeyChecking=yes" in data["vars"]["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={tmp_path / 'kh'}" in data["vars"]["ansible_ssh_common_args"]


def test_known_hosts_lines_carry_the_port_when_not_22() -> None:
    assert inventory.known_hosts_line("127.0.10.1", 22, "ssh-ed25519 AAA") == (
        "127.0.10.1 ssh-ed25519 AAA\n"
    )
    assert inventory.known_hosts_line("127.0.10.1", 2222, "ssh-ed25519 AAA") == (
        "[127.0.10.1]:2222 ssh-ed25519 AAA\n"
    )


def test_memory_check_names_need_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "available_memory_mib", lambda: 2048)
    checks.require_memory(3, 256)
    with pytest.raises(UsageError) as raised:
        checks.require_memory(10, 256)
    assert "10 hosts need about 2560 MiB of memory (256 MiB each) but 1536 MiB" in str(raised.value)
    assert raised.value.exit_code == 2


def test_mount_points_are_read_with_octal_escapes_and_unicode(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / / rw - ext4 /dev/vda rw\n"
        "96 22 0:50 / /srv/sandb\\040x/hosts/a/root rw - overlay overlay rw\n"
        "97 22 0:51 / /srv/sandb\\040x/hosts/a/root/proc rw - proc proc rw\n"
        "98 22 0:52 / /home/jos\u00e9/s/hosts/b/root rw - overlay overlay rw\n"
    )
    assert host.mount_points_below(Path("/srv/sandb x"), mountinfo) == [
        Path("/srv/sandb x/hosts/a/root/proc"),
        Path("/srv/sandb x/hosts/a/root"),
    ]
    assert host.mount_points_below(Path("/home/jos\u00e9/s"), mountinfo) == [
        Path("/home/jos\u00e9/s/hosts/b/root")
    ]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (  # hybrid: cgroup v1 controllers, name=systemd, and v2 at unified
            [
                "30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw",
                "31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu",
                "32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd",
                "33 30 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw",
            ],
            ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"],
        ),
        (  # unified only, as on current systemd hosts
            ["30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate"],
            ["/sys/fs/cgroup"],
        ),
    ],
)
def test_each_host_gets_cgroups_of_its_own_in_the_hierarchies_nspawn_uses(
    tmp_path: Path, lines: list[str], expected: list[str]
) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("\n".join(lines) + "\n")
    ctl = host.cgroups(Path("/s/sandboxes/a/hosts/ctl1/root"), mountinfo)
    other = host.cgroups(Path("/s/sandboxes/b/hosts/ctl1/root"), mountinfo)
    assert [c.parent.parent for c in ctl] == [Path(p) for p in expected]
    assert {c.parent.name for c in ctl} == {"clusterai-sandbox"}
    assert all(c.name.startswith("ctl1-") for c in ctl)
    # Same host name in another sandbox: different cgroups.
    assert {c.name for c in ctl}.isdisjoint({c.name for c in other})


def test_each_hosts_source_address_table_marks_only_its_own_cgroup() -> None:
    text = network.ruleset("127.0.10.2", "unified/clusterai-sandbox/x-0123", 2)
    assert text.startswith(
        "table ip clusterai_sandbox_127_0_10_2\ndelete table ip clusterai_sandbox_127_0_10_2\n"
    )
    assert (
        'socket cgroupv2 level 2 "unified/clusterai-sandbox/x-0123" ip saddr 127.0.0.1 '
        "ip daddr != 127.0.0.1 meta mark set 0x7f000a02" in text
    )
    assert "meta mark 0x7f000a02 ip saddr 127.0.0.1 snat ip to 127.0.10.2" in text
    # Another host's mark differs, so neither takes the other's packets.
    assert "0x7f000a03" in network.ruleset("127.0.10.3", "unified/clusterai-sandbox/y", 2)


def test_a_hosts_cgroup_v2_is_found_in_a_hybrid_or_unified_layout(tmp_path: Path) -> None:
    for v2 in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        mountinfo = tmp_path / "mountinfo"
        mounts = [f"30 1 0:26 / {tmp_path}{v2} rw - cgroup2 cgroup2 rw"]
        if v2.endswith("unified"):
            mounts.append(
                f"31 1 0:27 / {tmp_path}/sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd"
            )
        mountinfo.write_text("\n".join(mounts) + "\n")
        found = host.make_cgroups(Path("/state/sandboxes/demo/hosts/w1/root"), mountinfo)
        assert found is not None and found.is_dir()
        assert found.parents[1] == Path(f"{tmp_path}{v2}")
        assert found.parent.name == host.CGROUP_PARENT
