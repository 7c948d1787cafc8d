"""Typed settings, read once from ``CLUSTERAI_*`` environment variables.

Locations follow the XDG base directory conventions: state (sandboxes, later the state
store) under ``$XDG_STATE_HOME/clusterai`` and rebuildable artefacts (the sandbox root
file system) under ``$XDG_CACHE_HOME/clusterai``. Each can be overridden.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clusterai_runner.errors import UsageError

if TYPE_CHECKING:  # SQLAlchemy loads only when a command opens the store
    from clusterai_runner.store import Store

# The Ansible content (playbooks/, roles/, plugins/, ansible.cfg) the CLI runs.
REPO = Path(__file__).resolve().parent.parent
ANSIBLE_CONFIG = REPO / "ansible.cfg"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _xdg_dir(env: Mapping[str, str], variable: str, fallback: str) -> Path:
    value = env.get(variable, "")
    # The specification says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path(env.get("HOME") or os.path.expanduser("~")) / fallback


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise UsageError(name, f"{value!r} is not a boolean", "use 1 or 0")


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(name, f"{value!r} is not a positive whole number", "e.g. 256")
    return number


def _absolute_path(env: Mapping[str, str], name: str, default: Path) -> Path:
    value = env.get(name)
    if not value:
        return default
    if not os.path.isabs(value):
        raise UsageError(name, f"{value!r} is not an absolute path", "give a full path")
    return Path(value)


@dataclass(frozen=True)
class Settings:
    """Everything the CLI reads from its environment."""

    state_dir: Path
    """``CLUSTERAI_STATE_DIR``: sandboxes and other state
    (default ``$XDG_STATE_HOME/clusterai``)."""

    cache_dir: Path
    """``CLUSTERAI_CACHE_DIR``: rebuildable artefacts (default ``$XDG_CACHE_HOME/clusterai``)."""

    debug: bool
    """``CLUSTERAI_DEBUG``: show tracebacks; same as ``--debug``."""

    sandbox_host_memory_mib: int
    """``CLUSTERAI_SANDBOX_HOST_MEMORY_MIB``: memory budgeted per sandbox host (default 256)."""

    sandbox_mirror: str | None
    """``CLUSTERAI_SANDBOX_MIRROR``: Debian mirror for the sandbox root file system
    (default: the first Debian mirror in this machine's apt sources)."""

    state_url: str = ""
    """``CLUSTERAI_STATE_URL``: the state store, a SQLAlchemy URL
    (default ``sqlite:///<state_dir>/state.db``)."""

    aws_read_timeout_s: int = 30
    """``CLUSTERAI_AWS_READ_TIMEOUT``: seconds an AWS call waits for its answer before
    botocore retries it (default 30)."""

    cloud_ssh_timeout_s: int = 300
    """``CLUSTERAI_CLOUD_SSH_TIMEOUT``: seconds a new cloud worker has, once running, to
    answer over SSH with the host key it was given (default 300)."""

    @property
    def store_file(self) -> Path:
        """The default store's SQLite file (used when ``state_url`` is empty)."""
        return self.state_dir / "state.db"

    @property
    def store_url(self) -> str:
        return self.state_url or f"sqlite:///{self.store_file}"

    def private_state_dir(self) -> Path:
        """The state directory, created for its owner alone (0700): it holds the store,
        every run's output and the sandboxes' SSH keys. Missing parents get the usual mode;
        a directory that exists is left as its owner set it."""
        if not self.state_dir.is_dir():
            self.state_dir.parent.mkdir(parents=True, exist_ok=True)
            self.state_dir.mkdir(mode=0o700, exist_ok=True)
        return self.state_dir

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        state_default = _xdg_dir(env, "XDG_STATE_HOME", ".local/state") / "clusterai"
        cache_default = _xdg_dir(env, "XDG_CACHE_HOME", ".cache") / "clusterai"
        return cls(
            state_dir=_absolute_path(env, "CLUSTERAI_STATE_DIR", state_default),
            cache_dir=_absolute_path(env, "CLUSTERAI_CACHE_DIR", cache_default),
            debug=_bool(env, "CLUSTERAI_DEBUG", False),
            sandbox_host_memory_mib=_positive_int(env, "CLUSTERAI_SANDBOX_HOST_MEMORY_MIB", 256),
            sandbox_mirror=env.get("CLUSTERAI_SANDBOX_MIRROR") or None,
            state_url=env.get("CLUSTERAI_STATE_URL", ""),
            aws_read_timeout_s=_positive_int(env, "CLUSTERAI_AWS_READ_TIMEOUT", 30),
            cloud_ssh_timeout_s=_positive_int(env, "CLUSTERAI_CLOUD_SSH_TIMEOUT", 300),
        )


# ``CLUSTERAI_FORCED_VARS``: a YAML file of variables that beat the inventory's for every
# host, in what the CLI reads of the inventory and in every playbook it runs (as extra
# variables). The autoscaler's service sets it: its SSH key and known_hosts replace the
# paths of the operator's controller that a copied inventory names.
FORCED_VARS = "CLUSTERAI_FORCED_VARS"


def forced_variables(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The variables of ``CLUSTERAI_FORCED_VARS``'s file ({} when it is not set)."""
    env = os.environ if env is None else env
    name = env.get(FORCED_VARS, "")
    if not name:
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(Path(name).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(
            FORCED_VARS, f"cannot read {name}: {error.strerror}", "fix the path"
        ) from error
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UsageError(FORCED_VARS, f"{name} is not YAML{line}", "fix the file") from error
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and k.isidentifier() for k in loaded
    ):
        raise UsageError(
            FORCED_VARS, f"{name} is not a mapping of variables", "e.g. ansible_user: root"
        )
    return loaded


def open_store(settings: Settings) -> Store:
    """The state store, created or migrated; its problems are ``StoreError``s (exit 2)."""
    from clusterai_runner.store import Store

    if not settings.state_url:
        settings.private_state_dir()
        private_file(settings.store_file)
    return Store.open(settings.store_url)


def private_file(path: Path) -> Path:
    """Create ``path`` empty and for its owner alone (0600) unless it exists. SQLite takes an
    empty file for a new database, and gives its -wal and -shm files the database's mode."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


@contextmanager
def using_store(settings: Settings, store: Store | None = None) -> Iterator[Store]:
    """``store`` when the caller has one; else the settings' store, opened for the call and
    closed after it, so a long-running caller (the web app, the autoscaler) keeps no
    connection pool per call."""
    if store is not None:
        yield store
        return
    opened = open_store(settings)
    try:
        yield opened
    finally:
        opened.close()


def store_exists(settings: Settings) -> bool:
    """Whether there is a store to read, for commands that only read and never create one."""
    return bool(settings.state_url) or settings.store_file.exists()
