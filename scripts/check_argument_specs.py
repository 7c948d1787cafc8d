#!/usr/bin/env python3
"""Fail when a role's meta/argument_specs.yml drifts from its defaults/main.yml.

For every role under roles/: each variable in defaults/main.yml must be an option of
the ``main`` entry point with the same default, each option with a default must be in
defaults/main.yml, and the role's README must name every option. Prints one line per
problem and exits 1 when there is any.

    python scripts/check_argument_specs.py [ROLES_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"error: {path}: expected a mapping at the top level")
    return data


def check_role(role: Path) -> list[str]:
    problems = []
    defaults = _load(role / "defaults/main.yml")
    specs_path = role / "meta/argument_specs.yml"
    specs = _load(specs_path).get("argument_specs", {})
    if not specs_path.is_file() or "main" not in specs:
        return [f"{role.name}: {specs_path} has no argument_specs.main (add one)"]
    options: dict[str, Any] = specs["main"].get("options") or {}
    for name, value in defaults.items():
        if name not in options:
            problems.append(f"{role.name}: {name} is in defaults but not in argument_specs")
        elif options[name].get("default") != value:
            problems.append(
                f"{role.name}: {name} defaults to {value!r} but argument_specs says "
                f"{options[name].get('default')!r}"
            )
    for name, option in options.items():
        if "default" in option and name not in defaults:
            problems.append(f"{role.name}: {name} has a default in argument_specs only")
    readme = role / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    for name in options:
        if f"`{name}`" not in text:
            problems.append(f"{role.name}: README.md does not document `{name}`")
    return problems


def main(argv: list[str]) -> int:
    roles_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "roles"
    problems = [
        p for role in sorted(roles_dir.iterdir()) if role.is_dir() for p in check_role(role)
    ]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
