import importlib.util
import os
import stat
from pathlib import Path

import pytest

from clusterai_runner.config import Settings, open_store
from clusterai_runner.errors import UsageError


def test_defaults_follow_xdg() -> None:
    settings = Settings.from_env({"HOME": "/home/ops"})
    assert settings.state_dir == Path("/home/ops/.local/state/clusterai")
    assert settings.cache_dir == Path("/home/ops/.cache/clusterai")
    assert settings.debug is False
    assert settings.sandbox_host_memory_mib == 256
    assert settings.sandbox_mirror is None


def test_xdg_variables_and_overrides() -> None:
    env = {
        "HOME": "/home/ops",
        "XDG_STATE_HOME": "/var/state",
        "XDG_CACHE_HOME": "relative/is/ignored",
        "CLUSTERAI_DEBUG": "yes",
        "CLUSTERAI_SANDBOX_MIRROR": "http://mirror.example/debian",
    }
    settings = Settings.from_env(env)
    assert settings.state_dir == Path("/var/state/clusterai")
    assert settings.cache_dir == Path("/home/ops/.cache/clusterai")
    assert settings.debug is True
    assert settings.sandbox_mirror == "http://mirror.example/debian"
    assert Settings.from_env({**env, "CLUSTERAI_STATE_DIR": "/srv/s"}).state_dir == Path("/srv/s")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CLUSTERAI_DEBUG", "maybe", "CLUSTERAI_DEBUG: 'maybe' is not a boolean (use 1 or 0)"),
        ("CLUSTERAI_SANDBOX_HOST_MEMORY_MIB", "0", "is not a positive whole number"),
        ("CLUSTERAI_SANDBOX_HOST_MEMORY_MIB", "lots", "is not a positive whole number"),
        ("CLUSTERAI_STATE_DIR", "state", "CLUSTERAI_STATE_DIR: 'state' is not an absolute path"),
        ("CLUSTERAI_CACHE_DIR", "cache", "is not an absolute path"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        Settings.from_env({"HOME": "/root", name: value})
    assert message in str(raised.value)
    assert raised.value.exit_code == 2


def test_the_state_directory_and_the_store_are_their_owners_alone(tmp_path: Path) -> None:
    state = tmp_path / "a/state"
    settings = Settings.from_env({"HOME": "/home/ops", "CLUSTERAI_STATE_DIR": str(state)})
    previous = os.umask(0o022)  # the usual umask, which made them 0755 and 0644
    try:
        store = open_store(settings)
        try:
            store.start_run("site.yml", "hosts.yml")  # a write: SQLite makes its -wal file
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
        finally:
            store.close()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert "state.db" in modes and "state.db-wal" in modes
    assert set(modes.values()) == {0o600}, modes
    # A directory the operator made is left as they set it.
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o750)
    Settings.from_env({"HOME": "/", "CLUSTERAI_STATE_DIR": str(theirs)}).private_state_dir()
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o750


@pytest.mark.parametrize(
    "env",
    [
        {"HOME": "/home/ops"},
        {"HOME": "/home/ops", "XDG_CACHE_HOME": "/var/cache/ops"},
        {"HOME": "/home/ops", "XDG_CACHE_HOME": "relative/cache"},  # ignored, as XDG says
        {"HOME": "/home/ops", "XDG_CACHE_HOME": "/x", "CLUSTERAI_CACHE_DIR": "/srv/cai"},
    ],
)
def test_the_roles_cache_is_the_clis(env: dict[str, str]) -> None:
    """The roles' controller caches (lookup clusterai_cache_dir) and the CLI's (the sandbox's
    root file system) are one directory, whatever the environment says."""
    path = Path(__file__).resolve().parents[2] / "plugins/lookup/clusterai_cache_dir.py"
    spec = importlib.util.spec_from_file_location("clusterai_cache_dir", path)
    assert spec is not None and spec.loader is not None
    lookup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lookup)
    assert Path(lookup.cache_dir(env)) == Settings.from_env(env).cache_dir
    role_defaults = sorted(path.parents[2].glob("roles/*/defaults/main.yml"))
    caches = [line for p in role_defaults for line in p.read_text().splitlines()
              if line.split(":")[0].endswith("_controller_cache")]  # fmt: skip
    assert len(caches) == 8 and all("lookup('clusterai_cache_dir')" in c for c in caches)


def test_forced_variables_beat_the_inventorys_and_bad_ones_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clusterai_runner.adapters.inventory import load
    from clusterai_runner.config import forced_variables

    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  vars:\n    ansible_ssh_private_key_file: /home/op/.ssh/cluster\n"
        "  children:\n    control:\n      hosts:\n        ctl1: {ansible_host: 192.0.2.10}\n"
    )
    key = tmp_path / "id_ed25519"  # the service's key: it is checked as the inventory's are
    key.write_text("")
    key.chmod(0o600)
    forced = tmp_path / "forced.yml"
    forced.write_text(f"ansible_ssh_private_key_file: {key}\n")
    assert forced_variables({}) == {}
    monkeypatch.setenv("CLUSTERAI_FORCED_VARS", str(forced))
    [host] = load(inventory)
    assert host.variables["ansible_ssh_private_key_file"] == str(key)
    assert host.variables["ansible_host"] == "192.0.2.10"
    forced.write_text("- a list\n")
    with pytest.raises(
        UsageError, match=r"CLUSTERAI_FORCED_VARS: .* is not a mapping of variables"
    ):
        forced_variables()
    with pytest.raises(UsageError, match="CLUSTERAI_FORCED_VARS: cannot read"):
        forced_variables({"CLUSTERAI_FORCED_VARS": str(tmp_path / "missing.yml")})


def test_forced_variables_that_are_not_yaml_are_one_line(tmp_path: Path) -> None:
    from clusterai_runner.config import forced_variables

    forced = tmp_path / "forced.yml"
    forced.write_text("ansible_user: root\nbad: [unclosed\n")
    with pytest.raises(UsageError) as raised:
        forced_variables({"CLUSTERAI_FORCED_VARS": str(forced)})
    assert "\n" not in str(raised.value)
    assert f"CLUSTERAI_FORCED_VARS: {forced} is not YAML (line" in str(raised.value)
