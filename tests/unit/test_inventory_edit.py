"""Adding hosts to a YAML inventory and removing them again, line by line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from clusterai_runner.adapters.inventory_edit import NewHost, add_hosts, hosts_in, remove_hosts
from clusterai_runner.errors import UsageError

SAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "sample" / "hosts.yml"
NEW = [NewHost("gpu9", "192.0.2.90", "deploy", 2222), NewHost("gpu10", "2001:db8::10")]


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.yml"
    shutil.copy(SAMPLE, path)
    return path


def group_hosts(path: Path, *keys: str) -> dict[str, object]:
    node = yaml.safe_load(path.read_text())["all"]["children"]
    for key in keys:
        node = node[key]
    return dict(node["hosts"])


@pytest.mark.parametrize(
    ("group", "keys"),
    [
        ("bare_metal", ("workers", "children", "bare_metal")),  # after the group's last host
        ("workers", ("workers",)),  # a group with children only gets a `hosts:` block
        ("desktop", ("workers", "children", "desktop")),
        ("control", ("control",)),
    ],
)
def test_add_then_remove_restores_the_file_byte_for_byte(
    inventory: Path, group: str, keys: tuple[str, ...]
) -> None:
    original = inventory.read_bytes()
    add_hosts(inventory, group, NEW)
    added = group_hosts(inventory, *keys)
    assert added["gpu9"] == {
        "ansible_host": "192.0.2.90",
        "clusterai_address": "192.0.2.90",
        "ansible_user": "deploy",
        "ansible_port": 2222,
    }
    assert added["gpu10"] == {"ansible_host": "2001:db8::10", "clusterai_address": "2001:db8::10"}
    # Everything else is where it was, comments included.
    assert (
        "# Desktops with a consumer GPU: they keep their display manager." in inventory.read_text()
    )
    remove_hosts(inventory, ["gpu9", "gpu10"])
    assert inventory.read_bytes() == original


def test_an_empty_flow_group_gets_a_block_and_stays_equivalent(inventory: Path) -> None:
    add_hosts(inventory, "cloud", [NewHost("i-1", "192.0.2.99")])
    assert list(group_hosts(inventory, "workers", "children", "cloud")) == ["i-1"]
    remove_hosts(inventory, ["i-1"])
    # `hosts: {}` became an empty group; every other line is as it was.
    workers = yaml.safe_load(inventory.read_text())["all"]["children"]["workers"]["children"]
    assert workers["cloud"] is None
    assert inventory.read_text() == SAMPLE.read_text().replace("\n          hosts: {}", "", 1)


def test_removing_a_hand_written_host_keeps_its_neighbours(inventory: Path) -> None:
    remove_hosts(inventory, ["gpu1"])
    assert list(group_hosts(inventory, "workers", "children", "bare_metal")) == ["gpu2"]
    assert "gpu1" not in inventory.read_text()
    assert "# Servers in a rack, on all the time." in inventory.read_text()


def test_hosts_in_lists_every_block_of_hosts(inventory: Path) -> None:
    assert hosts_in(inventory) == {inventory: {"ctl1", "gpu1", "gpu2", "studio1"}}


def test_an_unknown_group_is_a_usage_error(inventory: Path) -> None:
    before = inventory.read_bytes()
    with pytest.raises(UsageError, match=r"no YAML file of inventory .* defines that group"):
        add_hosts(inventory, "gpus", NEW)
    assert inventory.read_bytes() == before


def test_crlf_files_keep_their_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_bytes(b"all:\r\n  children:\r\n    workers:\r\n      hosts:\r\n        w1:\r\n")
    original = path.read_bytes()
    add_hosts(path, "workers", [NewHost("w2", "192.0.2.2")])
    assert b"        w2:\r\n          ansible_host: 192.0.2.2\r\n" in path.read_bytes()
    remove_hosts(path, ["w2"])
    assert path.read_bytes() == original


def test_parking_adds_a_bare_entry_and_unparking_restores_the_file(inventory: Path) -> None:
    from clusterai_runner.adapters.inventory_edit import add_to_group

    before = inventory.read_text()
    add_to_group(inventory, "parked", "gpu1")  # the sample has no parked group: written
    add_to_group(inventory, "parked", "gpu2")  # then listed in it
    document = yaml.safe_load(inventory.read_text())["all"]["children"]
    assert document["parked"] == {"hosts": {"gpu1": None, "gpu2": None}}
    assert "gpu1" in group_hosts(inventory, "workers", "children", "bare_metal")  # kept there
    remove_hosts(inventory, ["gpu1"], "parked")
    assert group_hosts(inventory, "parked") == {"gpu2": None}
    assert "gpu1" in group_hosts(inventory, "workers", "children", "bare_metal")
    remove_hosts(inventory, ["gpu2"], "parked")
    # Only the empty group's name is left of the edits.
    assert inventory.read_text().replace("    parked:\n", "", 1) == before


def test_list_items_are_replaced_in_place_in_the_inventory_and_its_group_vars(
    tmp_path: Path,
) -> None:
    """What a model rollout edits: an alias of gateway_aliases and the ollama_models lists,
    wherever they are written (flow or block, quoted or not), each item's text alone."""
    from clusterai_runner.adapters.inventory_edit import list_entries, replace_entries

    hosts = tmp_path / "hosts.yml"
    hosts.write_text(
        "all:\n"
        "  vars:\n"
        '    gateway_aliases: {chat: [smollm2:135m], embed: ["nomic-embed-text"]}  # kept\n'
        "  children:\n"
        "    workers:\n"
        "      hosts:\n"
        "        w1:\n"
        "          ollama_models:\n"
        "            - smollm2:135m   # the chat model\n"
        "            - 'nomic-embed-text'\n"
    )
    group_vars = tmp_path / "group_vars" / "gpu"
    group_vars.mkdir(parents=True)
    (group_vars / "models.yml").write_text('ollama_models: ["SmolLM2:135m", qwen]\n')
    (tmp_path / "group_vars" / "vault.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    before = {p: p.read_text() for p in (hosts, group_vars / "models.yml")}

    def old(value: str) -> bool:
        return value.lower() == "smollm2:135m"

    alias = list_entries(hosts, ("gateway_aliases", "chat"), old)
    models = list_entries(hosts, ("ollama_models",), old)
    assert [(e.path.name, e.line, e.text) for e in alias] == [("hosts.yml", 2, "smollm2:135m")]
    assert [(e.path.name, e.line, e.text) for e in models] == [
        ("hosts.yml", 8, "smollm2:135m"), ("models.yml", 0, '"SmolLM2:135m"')]  # fmt: skip
    assert list_entries(hosts, ("gateway_aliases", "embed"), old) == []
    edits = replace_entries(alias + models, "smollm2:360m")
    assert hosts.read_text() == before[hosts].replace("smollm2:135m", "smollm2:360m")
    assert (group_vars / "models.yml").read_text() == 'ollama_models: ["smollm2:360m", qwen]\n'
    for edit in edits:
        edit.undo()
    assert {p: p.read_text() for p in before} == before
