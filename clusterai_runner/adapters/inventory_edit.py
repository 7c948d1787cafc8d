"""Adding hosts to a YAML inventory file and taking them out again, as text; and the
items of a list variable (``ollama_models``, an alias of ``gateway_aliases``) replaced in
place, in the inventory's files and its ``group_vars``/``host_vars``.

Only the lines of the hosts concerned change: comments, order, quoting and blank lines
elsewhere stay byte for byte, and removing a host that ``add_hosts`` wrote restores the
file exactly. ruamel.yaml parses the file only to find where each group and host sits;
the edit itself is done on the lines, because no YAML dumper reproduces a hand-written
file exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from clusterai_runner.adapters.files import atomic_write
from clusterai_runner.errors import UsageError

STATE_PLUGIN = "clusterai_state"


@dataclass(frozen=True)
class NewHost:
    name: str
    address: str | None = None
    user: str | None = None
    port: int | None = None
    # More host variables, such as the SSH key and known_hosts of a cloud worker.
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def variables(self) -> dict[str, str | int]:
        found: dict[str, str | int] = dict(self.extra)
        if self.address:
            found["ansible_host"] = self.address
            found["clusterai_address"] = self.address
        if self.user:
            found["ansible_user"] = self.user
        if self.port:
            found["ansible_port"] = self.port
        return found


def _read(path: Path) -> str:
    """The file's text with its line endings as they are (no newline translation)."""
    with path.open(newline="") as handle:
        return handle.read()


def _parse(path: Path, text: str) -> Any:
    try:
        return YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"inventory {where}", f"YAML error: {problem}", "fix the file") from exc


def is_state_inventory(path: Path) -> bool:
    """Whether ``path`` is a config file of the ``clusterai_state`` inventory plugin."""
    if not path.is_file() or path.suffix not in (".yml", ".yaml"):
        return False
    document = _parse(path, _read(path))
    return isinstance(document, dict) and document.get("plugin") in (
        STATE_PLUGIN,
        f"clusterai.cluster.{STATE_PLUGIN}",
    )


def _yaml_files(inventory: Path) -> list[Path]:
    if inventory.is_file():
        if is_state_inventory(inventory):
            return []
        if inventory.suffix not in (".yml", ".yaml"):
            raise UsageError(
                f"inventory {inventory}",
                "only YAML inventories can be edited by clusterai",
                "convert it with `ansible-inventory -i FILE --list -y` or add the host by hand",
            )
        return [inventory]
    return sorted(
        p
        for p in inventory.iterdir()
        if p.suffix in (".yml", ".yaml") and p.is_file() and not is_state_inventory(p)
    )


def _groups(mapping: Any) -> Iterator[tuple[str, CommentedMap, Any]]:
    """Every group of an inventory document: (name, the mapping holding its key, its value)."""
    if not isinstance(mapping, CommentedMap):
        return
    for name, value in mapping.items():
        yield str(name), mapping, value
        if isinstance(value, CommentedMap) and isinstance(value.get("children"), CommentedMap):
            yield from _groups(value["children"])


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _block_end(lines: list[str], start: int, column: int) -> int:
    """The last line of the block whose key sits at (start, column): every following line
    indented deeper, not counting blank or comment lines after its last content line."""
    end = start
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if not _is_content(line):
            continue
        if _indent(line) <= column or line.lstrip().startswith(("---", "...")):
            break
        end = index
    return end


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _scalar(value: str | int) -> str:
    text = str(value)
    plain = text.replace(".", "").replace("-", "").replace("_", "").isalnum()
    return text if isinstance(value, int) or plain else json.dumps(text)


def _host_lines(host: NewHost, column: int, step: int, newline: str) -> list[str]:
    pad, inner = " " * column, " " * (column + step)
    lines = [f"{pad}{host.name}:{newline}"]
    lines += [f"{inner}{key}: {_scalar(value)}{newline}" for key, value in host.variables().items()]
    return lines


def _child_step(hosts: CommentedMap, column: int) -> int:
    for value in hosts.values():
        if isinstance(value, CommentedMap) and value:
            return max(int(value.lc.key(next(iter(value)))[1]) - column, 1)
    return 2


@dataclass(frozen=True)
class Edit:
    """A file and what it held before, so a failed step can put it back."""

    path: Path
    before: str

    def undo(self) -> None:
        atomic_write(self.path, self.before)


def add_hosts(inventory: Path, group: str, new: list[NewHost]) -> Edit:
    """Add ``new`` to ``group`` in the YAML file of ``inventory`` that defines the group."""
    for path in _yaml_files(inventory):
        text = _read(path)
        document = _parse(path, text)
        found = [(parent, value) for name, parent, value in _groups(document) if name == group]
        if found:
            parent, value = found[0]
            atomic_write(path, _insert(text, parent, group, value, new))
            return Edit(path, text)
    raise UsageError(
        f"--group {group}",
        f"no YAML file of inventory {inventory} defines that group",
        "add the group to the inventory, or name one it has",
    )


def _insert(text: str, parent: CommentedMap, group: str, value: Any, new: list[NewHost]) -> str:
    lines = text.splitlines(keepends=True)
    newline = _newline(text)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline
    group_line, group_column = (int(n) for n in parent.lc.key(group))
    hosts = value.get("hosts") if isinstance(value, CommentedMap) else None
    if isinstance(hosts, CommentedMap) and hosts and not hosts.fa.flow_style():
        last = list(hosts)[-1]
        line, column = (int(n) for n in hosts.lc.key(last))
        step = _child_step(hosts, column)
        at = _block_end(lines, line, column) + 1
        block = [row for host in new for row in _host_lines(host, column, step, newline)]
    else:
        # No block of hosts yet: write one at the end of the group, replacing `hosts: {}`.
        if isinstance(value, CommentedMap) and value:
            key_column = int(value.lc.key(next(iter(value)))[1])
        else:
            key_column = group_column + 2
        if isinstance(value, CommentedMap) and "hosts" in value:
            del lines[int(value.lc.key("hosts")[0])]
            text_after = "".join(lines)
            return _insert_block(text_after, group, new, key_column, newline)
        at = _block_end(lines, group_line, group_column) + 1
        block = [f"{' ' * key_column}hosts:{newline}"]
        block += [row for host in new for row in _host_lines(host, key_column + 2, 2, newline)]
    return "".join(lines[:at] + block + lines[at:])


def _insert_block(text: str, group: str, new: list[NewHost], column: int, newline: str) -> str:
    """Insert a `hosts:` block into ``group`` of ``text`` (which holds no hosts for it)."""
    document = YAML(typ="rt").load(text)
    parent, value = next((p, v) for name, p, v in _groups(document) if name == group)
    return _insert(text, parent, group, value if value else None, new)


def _host_ranges(
    text: str, document: Any, name: str, group: str | None = None
) -> list[tuple[int, int]]:
    lines = text.splitlines(keepends=True)
    ranges = []
    for found, _parent, value in _groups(document):
        if group is not None and found != group:
            continue
        hosts = value.get("hosts") if isinstance(value, CommentedMap) else None
        if not isinstance(hosts, CommentedMap) or name not in hosts or hosts.fa.flow_style():
            continue
        if len(hosts) == 1:  # the group keeps no host: take its `hosts:` key too
            line, column = (int(n) for n in value.lc.key("hosts"))
        else:
            line, column = (int(n) for n in hosts.lc.key(name))
        ranges.append((line, _block_end(lines, line, column)))
    return ranges


def hosts_in(inventory: Path) -> dict[Path, set[str]]:
    """The host names each YAML file of ``inventory`` lists in a block of hosts."""
    found: dict[Path, set[str]] = {}
    for path in _yaml_files(inventory):
        document = _parse(path, _read(path))
        for _group, _parent, value in _groups(document):
            hosts = value.get("hosts") if isinstance(value, CommentedMap) else None
            if isinstance(hosts, CommentedMap):
                found.setdefault(path, set()).update(str(h) for h in hosts)
    return found


def remove_hosts(inventory: Path, names: list[str], group: str | None = None) -> list[Edit]:
    """Delete every entry of ``names`` from the YAML files of ``inventory`` (only those
    under ``group`` when given)."""
    edits = []
    for path in _yaml_files(inventory):
        original = text = _read(path)
        for name in names:
            ranges = _host_ranges(text, _parse(path, text), name, group)
            lines = text.splitlines(keepends=True)
            for start, end in sorted(ranges, reverse=True):
                del lines[start : end + 1]
            text = "".join(lines)
        if text != original:
            atomic_write(path, text)
            edits.append(Edit(path, original))
    return edits


def add_to_group(inventory: Path, group: str, name: str, beside: str = "workers") -> Edit:
    """List host ``name`` (defined elsewhere) under ``group`` too, as a bare entry; a
    group the inventory lacks is written after group ``beside``, under the same parent."""
    for path in _yaml_files(inventory):
        text = _read(path)
        document = _parse(path, text)
        if any(found == group for found, _parent, _value in _groups(document)):
            return add_hosts(inventory, group, [NewHost(name)])
    for path in _yaml_files(inventory):
        text = _read(path)
        document = _parse(path, text)
        found = [(parent, value) for g, parent, value in _groups(document) if g == beside]
        if not found:
            continue
        parent, _value = found[0]
        lines = text.splitlines(keepends=True)
        newline = _newline(text)
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        line, column = (int(n) for n in parent.lc.key(beside))
        at = _block_end(lines, line, column) + 1
        pad = " " * column
        block = [f"{pad}{group}:{newline}", f"{pad}  hosts:{newline}", f"{pad}    {name}:{newline}"]
        atomic_write(path, "".join(lines[:at] + block + lines[at:]))
        return Edit(path, text)
    raise UsageError(
        f"inventory {inventory}",
        f"no YAML file defines group {beside!r}, so group {group!r} has nowhere to go",
        f"add {group}: {{hosts: {{}}}} to the inventory by hand",
    )


@dataclass(frozen=True)
class ListEntry:
    """One item of a list variable, where it is written: its file, line and column (from
    0), and its text there (quotes included)."""

    path: Path
    line: int
    column: int
    text: str
    value: str


def variable_files(inventory: Path) -> list[Path]:
    """The YAML files that may set variables for ``inventory``: its own, and those of
    ``group_vars/`` and ``host_vars/`` beside it (a vault-encrypted one left out: it cannot
    be edited as text)."""
    base = inventory if inventory.is_dir() else inventory.parent
    found = list(_yaml_files(inventory))
    for folder in (base / "group_vars", base / "host_vars"):
        if folder.is_dir():
            found += sorted(p for p in folder.rglob("*") if p.is_file()
                            and p.suffix in (".yml", ".yaml", ""))  # fmt: skip
    return [p for p in found if not _read(p).startswith("$ANSIBLE_VAULT")]


def _mappings(node: Any) -> Iterator[CommentedMap]:
    if isinstance(node, CommentedMap):
        yield node
        for value in node.values():
            yield from _mappings(value)
    elif isinstance(node, CommentedSeq):
        for value in node:
            yield from _mappings(value)


def _token(line: str, column: int) -> str:
    """The scalar written at ``column``: quoted, or plain up to a comma, bracket or comment."""
    if line[column : column + 1] in ('"', "'"):
        close = line.find(line[column], column + 1)
        return line[column : close + 1] if close > column else line[column:]
    plain = re.match(r"[^,\]\}#\r\n]*", line[column:])
    return plain.group(0).rstrip() if plain else ""


def list_entries(
    inventory: Path, keys: tuple[str, ...], matches: Callable[[str], bool]
) -> list[ListEntry]:
    """Every item that ``matches`` of each list found under ``keys`` (a key at any depth,
    then the keys below it: ``("ollama_models",)``, ``("gateway_aliases", "chat")``) in the
    inventory's variable files."""
    found = []
    for path in variable_files(inventory):
        text = _read(path)
        lines = text.splitlines()
        for mapping in _mappings(_parse(path, text)):
            value: Any = mapping
            for key in keys:
                value = value.get(key) if isinstance(value, CommentedMap) else None
            if not isinstance(value, CommentedSeq):
                continue
            for index, item in enumerate(value):
                if isinstance(item, str) and matches(item):
                    line, column = (int(n) for n in value.lc.item(index))
                    found.append(ListEntry(path, line, column, _token(lines[line], column), item))
    return found


def _written_like(old: str, new: str) -> str:
    """``new`` quoted as ``old`` was: plain where it was plain and ``new`` can be."""
    if old[:1] == "'" and "'" not in new:
        return f"'{new}'"
    if old[:1] != '"' and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/@-]*", new):
        return new
    return json.dumps(new)


def replace_entries(entries: list[ListEntry], new: str) -> list[Edit]:
    """Write ``new`` in place of each entry (``list_entries``), every other byte kept."""
    edits = []
    for path in sorted({e.path for e in entries}):
        before = _read(path)
        lines = before.splitlines(keepends=True)
        # Right to left on a line, so earlier columns stay where they are.
        for entry in sorted((e for e in entries if e.path == path),
                            key=lambda e: (e.line, -e.column)):  # fmt: skip
            line = lines[entry.line]
            if line[entry.column : entry.column + len(entry.text)] != entry.text:
                raise UsageError(f"inventory {path}:{entry.line + 1}", "changed while clusterai"
                                 " edited it", "run the command again")  # fmt: skip
            end = entry.column + len(entry.text)
            lines[entry.line] = line[: entry.column] + _written_like(entry.text, new) + line[end:]
        atomic_write(path, "".join(lines))
        edits.append(Edit(path, before))
    return edits
