"""The bad-input corpus: each broken inventory, store or argument gets one line naming the
file, line or field and the fix, exit 2, no traceback, and leaves the inventory and the
state store exactly as they were.

No host is needed: every case must be refused before anything connects. The inventories'
addresses are loopback addresses nothing listens on.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clusterai_runner.cli import main
from clusterai_runner.store import SCHEMA_VERSION, Store

GOOD = """\
# A valid inventory; each case breaks one thing in it.
all:
  vars:
    clusterai_inference_backend: llamacpp
    clusterai_backend_api_key: bad-input-test-key-0123
    clusterai_monitoring_password: bad-input-test-password
  children:
    control:
      hosts:
        ctl1:
          ansible_host: 127.0.99.1
          clusterai_address: 127.0.99.1
    workers:
      hosts:
        w1:
          ansible_host: 127.0.99.2
          clusterai_address: 127.0.99.2
"""


ADMIN_KEY = "    gateway_admin_key: bad-input-admin-key-0123\n"
# GOOD with w1 in workers' desktop group; {extra}: more of its variables.
DESKTOP = GOOD.replace(
    "      hosts:\n        w1:\n          ansible_host: 127.0.99.2\n"
    "          clusterai_address: 127.0.99.2\n",
    "      children:\n        desktop:\n          hosts:\n            w1:\n"
    "              ansible_host: 127.0.99.2\n"
    "              clusterai_address: 127.0.99.2\n{extra}",
)


def autoscale(pool: str, more: str = "", text: str | None = None) -> Callable[[str], str]:
    """GOOD (or ``text``) with ``autoscale_pools: [pool]`` and ``more`` in all's vars."""

    def edit(good: str) -> str:
        vars_line = "  vars:\n"
        return (text or good).replace(
            vars_line, f"{vars_line}    autoscale_pools: [{pool}]\n{more}", 1
        )

    return edit


@dataclass
class Case:
    id: str
    args: list[str]  # {inv} is the inventory's path, {dir} the case's directory
    expected: list[str]  # substrings of the one error line
    inventory: str | None = GOOD
    edit: Callable[[str], str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    suffix: str = ".yml"
    encoding: str = "utf-8"  # of the inventory file written


def replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


def newer_store(directory: Path) -> None:
    with sqlite3.connect(directory / "state" / "state.db") as db:
        db.execute("update schema_version set version = ?", (SCHEMA_VERSION + 1,))


def foreign_store(directory: Path) -> None:
    (directory / "state" / "state.db").unlink()
    with sqlite3.connect(directory / "state" / "state.db") as db:
        db.execute("create table accounts (id integer)")


def damaged_store(directory: Path) -> None:
    (directory / "state" / "state.db").write_bytes(b"not SQLite" + bytes(range(256)) * 20)


def vaulted_inventory(directory: Path) -> None:
    inventory = directory / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(GOOD)
    secret = inventory / "group_vars" / "all.yml"
    secret.write_text("owner_token: secret\n")
    (directory / "password").write_text("a password\n")
    subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt", str(secret),
         "--vault-password-file", str(directory / "password")],
        check=True, capture_output=True,
    )  # fmt: skip


def binary_inventory(directory: Path) -> None:
    (directory / "binary.yml").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))


def latin1_group_vars(directory: Path) -> None:
    inventory = directory / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(GOOD)
    (inventory / "group_vars" / "all.yml").write_bytes(b"---\nowner: Jos\xe9\n")


def open_key(directory: Path) -> None:
    key = directory / "id_key"
    key.write_text("a private key\n")
    key.chmod(0o644)


W1_ADDRESS = "          ansible_host: 127.0.99.2\n"


def rollout_inventory(good: str) -> str:
    """GOOD with the alias chat naming smollm2:135m, which w1 (an Ollama worker) holds."""
    return good.replace(
        "  vars:\n", "  vars:\n    gateway_aliases: {chat: [smollm2:135m]}\n", 1
    ).replace(
        "          clusterai_address: 127.0.99.2\n",
        "          clusterai_address: 127.0.99.2\n          clusterai_inference_backend: ollama\n"
        "          ollama_models: [smollm2:135m]\n",
    )


def with_store(good: str) -> str:
    """GOOD with the cluster's model store turned on."""
    return good.replace("  vars:\n", "  vars:\n    clusterai_model_store: true\n", 1)


def half_a_model(folder: Path, blob: bytes | None = None) -> None:
    """An Ollama models directory whose manifest names a blob it does not hold (or holds
    as ``blob``, which is not what its name says)."""
    manifest = folder / "models" / "manifests" / "registry.ollama.ai" / "library" / "m" / "1b"
    manifest.parent.mkdir(parents=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "a" * 64}
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [layer]}))
    if blob is not None:
        (folder / "models" / "blobs").mkdir()
        (folder / "models" / "blobs" / ("sha256-" + "a" * 64)).write_bytes(blob)


CASES = [
    # --- The inventory file itself ---------------------------------------------------
    Case("yaml-indent", ["validate", "-i", "{inv}"], [":12: YAML syntax error"],
         edit=replace("          clusterai_address: 127.0.99.1", "    clusterai_address: x: y")),
    Case("yaml-tab", ["up", "-i", "{inv}"], ["YAML syntax error", "fix the file"],
         edit=replace("    workers:\n", "    workers:\n\t\n")),
    Case("yaml-unclosed-quote", ["validate", "-i", "{inv}"], ["YAML syntax error"],
         edit=replace("clusterai_address: 127.0.99.2", 'clusterai_address: "127.0.99.2')),
    Case("duplicate-host", ["validate", "-i", "{inv}"], [":18: ", "duplicate key 'w1'"],
         edit=lambda t: t + "        w1:\n          ansible_host: 127.0.99.3\n"),
    Case("duplicate-group", ["up", "-i", "{inv}"], ["duplicate key 'workers'"],
         edit=lambda t: t + "    workers:\n      hosts:\n        w2:\n"),
    Case("empty-file", ["validate", "-i", "{inv}"], ["holds no hosts"], inventory=""),
    Case("missing-file", ["up", "-i", "{dir}/nope.yml"], ["nope.yml: does not exist"]),
    Case("empty-directory", ["validate", "-i", "{dir}/empty"], ["holds no hosts"],
         setup=lambda d: (d / "empty").mkdir()),
    # --- Hosts and groups --------------------------------------------------------------
    Case("host-in-control-and-workers", ["up", "-i", "{inv}"],
         ["ctl1 in both 'control' and 'workers'", "put each host in one of them"],
         edit=lambda t: t + "        ctl1:\n"),
    Case("two-control-hosts", ["up", "-i", "{inv}"], ["group 'control' holds 2 hosts"],
         edit=replace("    workers:\n", "        ctl2:\n          clusterai_address: 127.0.99.9\n"
                      "    workers:\n")),
    Case("no-workers-group", ["up", "-i", "{inv}"], ["group 'workers' is missing"],
         edit=lambda t: t.replace("    workers:", "    others:")),
    Case("missing-address", ["up", "-i", "{inv}"],
         ["host w1: clusterai_address is not set"],
         edit=replace("          clusterai_address: 127.0.99.2\n", "")),
    Case("invalid-ip", ["up", "-i", "{inv}"],
         ["host w1: clusterai_address 127.0.99.300 is not an IP address"],
         edit=replace("clusterai_address: 127.0.99.2", "clusterai_address: 127.0.99.300")),
    Case("address-is-a-name", ["up", "-i", "{inv}"],
         ["clusterai_address gpu-one is not an IP address"],
         edit=replace("clusterai_address: 127.0.99.2", "clusterai_address: gpu-one")),
    Case("invalid-ansible-host", ["validate", "-i", "{inv}"],
         ["host w1: ansible_host 127.0.99.256 is not a valid IP address"],
         edit=replace("ansible_host: 127.0.99.2", "ansible_host: 127.0.99.256")),
    Case("ansible-host-is-an-option", ["validate", "-i", "{inv}"],
         ["host w1: ansible_host '-oProxyCommand=touch x' is not an IP address or host name"],
         edit=replace("ansible_host: 127.0.99.2", "ansible_host: '-oProxyCommand=touch x'")),
    Case("ansible-host-with-a-space", ["up", "-i", "{inv}"],
         ["ansible_host 'gpu one' is not an IP address or host name"],
         edit=replace("ansible_host: 127.0.99.2", "ansible_host: gpu one")),
    Case("ansible-user-is-an-option", ["validate", "-i", "{inv}"],
         ["host w1: ansible_user '-oProxyCommand=x' is not a user name"],
         edit=replace(W1_ADDRESS, W1_ADDRESS + "          ansible_user: '-oProxyCommand=x'\n")),
    Case("port-not-a-number", ["validate", "-i", "{inv}"],
         ["host w1: ansible_port 'twenty-two' is not a port", "use 1 to 65535"],
         edit=replace(W1_ADDRESS, W1_ADDRESS + "          ansible_port: twenty-two\n")),
    Case("port-out-of-range", ["up", "-i", "{inv}"], ["ansible_port 70000 is not a port"],
         edit=replace(W1_ADDRESS, W1_ADDRESS + "          ansible_port: 70000\n")),
    Case("string-boolean", ["up", "-i", "{inv}"],
         ['host w1: ollama_models_prune is "yes", not a bool'],
         edit=replace(W1_ADDRESS, W1_ADDRESS + '          ollama_models_prune: "yes"\n')),
    Case("string-port", ["up", "-i", "{inv}"],
         ['llamacpp_server_port is "http", not an int'],
         edit=replace(W1_ADDRESS, W1_ADDRESS + "          llamacpp_server_port: http\n")),
    Case("unknown-backend", ["up", "-i", "{inv}"],
         ["clusterai_inference_backend vllm is not one of llamacpp, ollama"],
         edit=replace("backend: llamacpp", "backend: vllm")),
    Case("removed-variable", ["up", "-i", "{inv}"],
         ["gpu_count is not read by Cluster AI"],
         edit=replace(W1_ADDRESS, W1_ADDRESS + "          gpu_count: 2\n")),
    Case("key-file-too-open", ["validate", "-i", "{inv}"],
         ["host w1: ansible_ssh_private_key_file", "id_key has mode 0644", "chmod 600"],
         setup=open_key,
         edit=replace(W1_ADDRESS, W1_ADDRESS + "          ansible_ssh_private_key_file: "
                      "{dir}/id_key\n")),
    Case("key-file-is-a-directory", ["validate", "-i", "{inv}"],
         ["ansible_ssh_private_key_file", "does not exist or cannot be read"],
         edit=replace("  vars:\n", "  vars:\n    ansible_ssh_private_key_file: {dir}\n")),
    Case("missing-key-file", ["up", "-i", "{inv}"],
         ["nokey does not exist or cannot be read"],
         edit=replace("  vars:\n", "  vars:\n    ansible_ssh_private_key_file: /nokey\n")),
    Case("unbalanced-ssh-args", ["validate", "-i", "{inv}"],
         ["ansible_ssh_common_args: No closing quotation"],
         edit=replace("  vars:\n", "  vars:\n    ansible_ssh_common_args: \"-o 'User=x\"\n")),
    # --- --limit -----------------------------------------------------------------------
    Case("unknown-limit-group", ["up", "-i", "{inv}", "--limit", "gpus"],
         ["--limit gpus: matches no host", "groups: "]),
    Case("unknown-limit-host", ["validate", "-i", "{inv}", "--limit", "w9"],
         ["--limit w9: matches no host"]),
    # --- The state store ---------------------------------------------------------------
    Case("store-from-newer-clusterai", ["up", "-i", "{inv}"],
         [f"schema version {SCHEMA_VERSION + 1} was written by a newer clusterai"],
         setup=newer_store),
    Case("store-of-another-program", ["runs", "list"], ["holds tables but no schema version"],
         setup=foreign_store),
    Case("store-damaged", ["runs", "list"],
         ["state.db: is damaged or not a Cluster AI store", "restore it from a backup"],
         setup=damaged_store),
    Case("store-damaged-keys", ["gateway", "keys", "list"],
         ["is damaged or not a Cluster AI store (file is not a database)"], setup=damaged_store),
    Case("store-url-unusable", ["runs", "list"], ["is not a usable database URL"],
         env={"CLUSTERAI_STATE_URL": "nosuchdb://x"}),
    Case("unknown-run", ["runs", "show", "424242"], ["run 424242: no such run"]),
    Case("unknown-run-host", ["runs", "show", "1", "--host", "w9"], ["--host w9: not in run 1"]),
    Case("bad-debug-setting", ["runs", "list"], ["CLUSTERAI_DEBUG"],
         env={"CLUSTERAI_DEBUG": "perhaps"}),
    # --- scale-out ---------------------------------------------------------------------
    Case("scale-out-existing-control-host", ["scale-out", "-i", "{inv}", "ctl1"],
         ["host ctl1: is already in the inventory, in control"]),
    Case("scale-out-bad-name", ["scale-out", "-i", "{inv}", "gpu 3"],
         ["host 'gpu 3': is not a valid inventory host name"]),
    Case("scale-out-bad-address", ["scale-out", "-i", "{inv}", "w3", "--address", "127.0.0.999"],
         ["--address 127.0.0.999: is not an IP address or host name"]),
    Case("scale-out-address-count", ["scale-out", "-i", "{inv}", "w3", "w4", "--address",
                                     "127.0.99.3"], ["--address: 1 addresses for 2 hosts"]),
    Case("scale-out-unknown-group", ["scale-out", "-i", "{inv}", "w3", "--group", "gpus"],
         ["--group gpus: no YAML file of inventory", "defines that group"]),
    Case("scale-out-to-control", ["scale-out", "-i", "{inv}", "w3", "--group", "control"],
         ["--group control: the cluster has one control host"]),
    Case("scale-out-bad-user", ["scale-out", "-i", "{inv}", "w3", "--user", "Root User"],
         ["--user Root User: is not a valid user name"]),
    Case("scale-out-bad-port", ["scale-out", "-i", "{inv}", "w3", "--port", "0"],
         ["Invalid value for '--port'"]),
    Case("scale-out-twice-named", ["scale-out", "-i", "{inv}", "w3", "w3"],
         ["a host is named twice"]),
    Case("scale-out-ini-inventory", ["scale-out", "-i", "{inv}", "w3"],
         ["only YAML inventories can be edited"], suffix=".ini",
         inventory="[control]\nctl1 ansible_host=127.0.99.1 clusterai_address=127.0.99.1\n"
                   "[workers]\nw1 ansible_host=127.0.99.2 clusterai_address=127.0.99.2\n"
                   "[all:vars]\nclusterai_inference_backend=llamacpp\n"
                   "clusterai_backend_api_key=bad-input-test-key-0123\n"
                   "clusterai_monitoring_password=bad-input-test-password\n"),
    Case("scale-out-new-host-bad-address", ["scale-out", "-i", "{inv}", "w3"],
         ["host w3: clusterai_address is not set"]),
    # --- Files that are not inventories, names that cannot be named ----------------------
    Case("binary-file", ["validate", "-i", "{dir}/binary.yml"], ["binary.yml: is a binary file"],
         inventory=None, setup=binary_inventory),
    Case("latin1-inventory", ["up", "-i", "{inv}"], ["hosts.yml:16: is not UTF-8 text (byte 0xe9)"],
         inventory=GOOD.replace("w1:\n", "w1:\n          owner: Jos\xe9\n"), encoding="latin-1"),
    Case("latin1-group-vars", ["status", "-i", "{dir}/inventory"],
         ["group_vars/all.yml:2: is not UTF-8 text", "save the file as UTF-8"],
         inventory=None, setup=latin1_group_vars),
    Case("host-name-with-a-comma", ["validate", "-i", "{inv}"],
         ["host 'w1,w2': is not a usable host name"],
         edit=replace("        w1:", '        "w1,w2":')),
    Case("host-name-with-a-space", ["scale-in", "-i", "{inv}", "w1", "--yes"],
         ["host 'web 1': is not a usable host name"],
         edit=replace("    workers:\n      hosts:\n", "    workers:\n      hosts:\n        web 1:\n"
                      "          ansible_host: 127.0.99.3\n"
                      "          clusterai_address: 127.0.99.3\n")),
    # --- ansible-vault -------------------------------------------------------------------
    Case("vault-without-a-password", ["status", "-i", "{dir}/inventory"],
         ["holds ansible-vault encrypted values and no vault password was given",
          "add --vault-password-file FILE or --ask-vault-pass"],
         inventory=None, setup=vaulted_inventory),
    Case("vault-wrong-password", ["validate", "-i", "{dir}/inventory", "--vault-password-file",
                                  "{dir}/hosts.yml"],
         ["the vault password given does not open its ansible-vault encrypted values"],
         setup=vaulted_inventory),
    Case("vault-password-file-missing", ["up", "-i", "{inv}", "--vault-password-file",
                                         "{dir}/nope"],
         ["--vault-password-file", "nope: is not a readable file"]),
    Case("vault-both-ways", ["scale-out", "-i", "{inv}", "w3", "--ask-vault-pass",
                             "--vault-password-file", "{dir}/nope"],
         ["--ask-vault-pass: and --vault-password-file both given"]),
    # --- scale-in ----------------------------------------------------------------------
    Case("scale-in-unknown-host", ["scale-in", "-i", "{inv}", "w9", "--yes"],
         ["host w9: is not in inventory", "hosts: ctl1, w1"]),
    Case("scale-in-control-host", ["scale-in", "-i", "{inv}", "ctl1", "--yes"],
         ["host ctl1: is the control host"]),
    Case("scale-in-without-yes", ["scale-in", "-i", "{inv}", "w1"],
         ["no terminal to ask for confirmation", "add --yes"]),
    Case("scale-in-bad-drain-timeout", ["scale-in", "-i", "{inv}", "w1", "--drain-timeout",
                                        "-1"], ["Invalid value for '--drain-timeout'"]),
    # --- The autoscaler's configuration (autoscale plan/once/run read it first) ---------
    Case("autoscale-unset", ["autoscale", "plan", "-i", "{inv}"],
         ["autoscale_pools: is not set"]),
    Case("autoscale-min-above-max", ["autoscale", "run", "-i", "{inv}"],
         ["autoscale_pools[0].min: 3 is above max 1", "lower min or raise max"],
         edit=autoscale("{name: standby, min: 3, max: 1}")),
    Case("autoscale-unknown-pool-kind", ["autoscale", "once", "-i", "{inv}"],
         ["autoscale_pools[0].kind: 'moon' is not a pool kind"],
         edit=autoscale("{name: standby, kind: moon}")),
    Case("autoscale-bad-window", ["autoscale", "plan", "-i", "{inv}"],
         ["autoscale_pools[0].schedules[0].when: 'weekdays 8-18' does not parse"],
         edit=autoscale("{name: standby, schedules: [{when: weekdays 8-18, min: 1}]}")),
    Case("autoscale-negative-delay", ["autoscale", "plan", "-i", "{inv}"],
         ["autoscale_idle_s: -5 is not a number of at least 0"],
         edit=autoscale("{name: standby}", "    autoscale_idle_s: -5\n")),
    Case("autoscale-empty-group", ["autoscale", "plan", "-i", "{inv}"],
         ["autoscale_pools[0].group: group 'standby' holds no host"],
         edit=autoscale("{name: standby}")),
    Case("autoscale-no-admin-key", ["autoscale", "plan", "-i", "{inv}"],
         ["gateway_admin_key: is not set"],
         edit=autoscale("{name: standby}", text=GOOD.replace(
             "      hosts:\n        w1:\n          ansible_host: 127.0.99.2\n"
             "          clusterai_address: 127.0.99.2\n",
             "      children:\n        standby:\n          hosts:\n            w1:\n"
             "              ansible_host: 127.0.99.2\n"
             "              clusterai_address: 127.0.99.2\n"))),
    Case("autoscale-wake-without-mac", ["autoscale", "wake", "-i", "{inv}", "w1"],
         ["host w1: desktop_mac: is not set", "to its network card's MAC"],
         edit=autoscale("{name: desk, kind: desktop}", ADMIN_KEY,
                        text=DESKTOP.format(extra=""))),
    Case("autoscale-desktop-bad-mac", ["autoscale", "plan", "-i", "{inv}"],
         ["host w1: desktop_mac: 'not-a-mac' is not a MAC address"],
         edit=autoscale("{name: desk, kind: desktop}", ADMIN_KEY,
                        text=DESKTOP.format(extra="              desktop_mac: not-a-mac\n"))),
    Case("autoscale-desktop-bad-timezone", ["autoscale", "run", "-i", "{inv}"],
         ["autoscale_pools[0].timezone: 'Mars/Olympus' is not a time zone"],
         edit=autoscale("{name: desk, kind: desktop, timezone: Mars/Olympus}")),
    Case("autoscale-window-on-standby", ["autoscale", "plan", "-i", "{inv}"],
         ["autoscale_pools[0].available: is a desktop pool's setting"],
         edit=autoscale("{name: standby, available: ['* 08:00-18:00']}")),
    Case("parked-not-a-worker", ["up", "-i", "{inv}"],
         ["ctl1 in 'parked' but not in 'workers'", "take it out of parked"],
         edit=lambda t: t + "    parked:\n      hosts:\n        ctl1:\n"),
    # --- Other arguments ---------------------------------------------------------------
    Case("validate-zero-parallel", ["validate", "-i", "{inv}", "--parallel", "0"],
         ["Invalid value for '--parallel'"]),
    Case("unknown-option", ["up", "-i", "{inv}", "--fast"], ["No such option '--fast'"]),
    # --- models import -----------------------------------------------------------------
    Case("import-missing-path", ["models", "import", "{dir}/nope", "-i", "{inv}"],
         ["nope: no such file or directory", "give an Ollama models directory or a GGUF"]),
    Case("import-not-a-model", ["models", "import", "{dir}/notes.txt", "-i", "{inv}"],
         ["notes.txt: not a GGUF file (no GGUF magic number)"], edit=with_store,
         setup=lambda d: (d / "notes.txt").write_text("hello")),
    Case("import-blob-missing", ["models", "import", "{dir}/models", "-i", "{inv}"],
         ["names sha256:" + "a" * 64, "does not hold"], edit=with_store,
         setup=lambda d: half_a_model(d)),
    Case("import-blob-not-its-name", ["models", "import", "{dir}/models", "-i", "{inv}"],
         ["models/blobs/sha256-" + "a" * 64 + ": its SHA-256 is sha256:", "not its name"],
         edit=with_store, setup=lambda d: half_a_model(d, b"rotten")),
    Case("import-without-a-store", ["models", "import", "{dir}/m.gguf", "-i", "{inv}"],
         ["runs no model store", "set clusterai_model_store: true"],
         setup=lambda d: (d / "m.gguf").write_bytes(b"GGUF" + bytes(8))),
    # --- models rollout ----------------------------------------------------------------
    Case("rollout-unknown-alias", ["models", "rollout", "chat", "--to", "360m", "-i", "{inv}"],
         ["alias 'chat': is not one of the control host's gateway_aliases naming one model"]),
    Case("rollout-bad-eval", ["models", "rollout", "chat", "--to", "360m", "-i", "{inv}",
                              "--eval", "{dir}/eval.yml"],
         ["eval.yml: cases[0].contains: must be a text or a list of texts"],
         setup=lambda d: (d / "eval.yml").write_text("cases: [{name: a, prompt: p, contains: 3}]")),
    Case("rollout-same-model", ["models", "rollout", "chat", "--to", "smollm2:135m", "-i", "{inv}"],
         ["--to smollm2:135m: is the model chat names already"], edit=rollout_inventory),
    Case("rollout-no-eligible-worker", ["models", "rollout", "chat", "--to", "360m", "-i", "{inv}"],
         ["alias 'chat': has no eligible worker: no Ollama worker in service lists smollm2:135m"],
         edit=lambda t: rollout_inventory(t).replace("ollama_models: [smollm2:135m]", "x: 1")),
    Case("rollout-too-many-canaries", ["models", "rollout", "chat", "--to", "360m", "--canary",
                                       "2", "-i", "{inv}"],
         ["--canary 2: must be from 1 to 1"], edit=rollout_inventory),
    Case("rollout-bad-target", ["models", "rollout", "chat", "--to", "a b", "-i", "{inv}"],
         ["--to 'a b': is not a model name, tag or sha256 digest"], edit=rollout_inventory),
]  # fmt: skip


def snapshot(directory: Path) -> dict[str, object]:
    """Every file's bytes, except the store, which is compared by its rows (SQLite may
    leave or remove its -wal and -shm files on a read)."""
    found: dict[str, object] = {}
    for path in sorted(directory.rglob("*")):
        relative = str(path.relative_to(directory))
        if path.name.endswith(("-wal", "-shm")) or path.is_dir():
            continue
        if path.name == "state.db" and path.read_bytes().startswith(b"SQLite format 3"):
            with sqlite3.connect(path) as db:
                found[relative] = list(db.iterdump())
        else:
            found[relative] = path.read_bytes()
    return found


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    """A state store holding one finished run, as after a first `clusterai up`."""
    (tmp_path / "state").mkdir()
    store = Store.open(f"sqlite:///{tmp_path / 'state' / 'state.db'}")
    run_id = store.start_run("site.yml", "hosts.yml")
    store.finish_run(run_id, "successful", 0, {"ctl1": {"ok": 3}, "w1": {"ok": 3}})
    store.close()
    return tmp_path


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    case: Case,
    case_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In this process (``main`` as the entry point calls it): one interpreter and one
    import of Ansible for the whole corpus; the playbook checks still run ansible-playbook."""
    inventory = case_dir / f"hosts{case.suffix}"
    if case.inventory is not None:
        text = case.edit(case.inventory) if case.edit else case.inventory
        inventory.write_text(text.replace("{dir}", str(case_dir)), encoding=case.encoding)
    if case.setup is not None:
        case.setup(case_dir)
    before = snapshot(case_dir)
    args = [a.replace("{inv}", str(inventory)).replace("{dir}", str(case_dir)) for a in case.args]
    for name in [n for n in os.environ if n.startswith("CLUSTERAI_")]:
        monkeypatch.delenv(name)
    for name, value in {"CLUSTERAI_STATE_DIR": str(case_dir / "state"), **case.env}.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(args)
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert code == 2, (code, stderr)
    line = lines[0]
    assert line.startswith("error: "), line
    for expected in case.expected:
        assert expected in line, line
    assert snapshot(case_dir) == before
    assert not os.path.exists(case_dir / "state" / "runs")  # no run was started


def test_status_asks_the_hosts_when_the_store_is_damaged(
    case_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """status needs the store only for the last runs: a damaged store is a warning naming
    it, not exit 2, and every host is still asked."""
    damaged_store(case_dir)
    inventory = case_dir / "hosts.yml"
    inventory.write_text(GOOD)
    monkeypatch.setenv("CLUSTERAI_STATE_DIR", str(case_dir / "state"))
    monkeypatch.delenv("CLUSTERAI_STATE_URL", raising=False)
    code = main(["status", "-i", str(inventory), "--limit", "w1", "--timeout", "0.2", "--json"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err  # 1 unless something answers on 127.0.99.2
    (host,) = json.loads(out)["hosts"]
    assert (host["name"], host["last_run"]) == ("w1", None)
    assert "warning: state store sqlite:///" in err
    assert "state.db: is damaged or not a Cluster AI store" in err
    assert "the last runs are left out" in err
    assert "Traceback" not in err
