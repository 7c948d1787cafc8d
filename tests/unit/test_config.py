from pathlib import Path

import pytest

from clusterai_runner.config import Settings
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
