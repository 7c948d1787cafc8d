import importlib.util
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("check", REPO / "scripts/check_argument_specs.py")
assert spec and spec.loader
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def make_role(root: Path, defaults: dict[str, object], options: dict[str, object]) -> Path:
    role = root / "demo"
    (role / "defaults").mkdir(parents=True)
    (role / "meta").mkdir()
    (role / "defaults/main.yml").write_text(yaml.safe_dump(defaults))
    (role / "meta/argument_specs.yml").write_text(
        yaml.safe_dump({"argument_specs": {"main": {"options": options}}})
    )
    (role / "README.md").write_text("`demo_port` `demo_user`\n")
    return role


def test_the_shipped_roles_are_in_step() -> None:
    assert check.main(["check", str(REPO / "roles")]) == 0


def test_matching_role_passes(tmp_path: Path) -> None:
    role = make_role(tmp_path, {"demo_port": 80}, {"demo_port": {"type": "int", "default": 80}})
    assert check.check_role(role) == []


@pytest.mark.parametrize(
    ("defaults", "options", "problem"),
    [
        ({"demo_port": 80}, {}, "demo: demo_port is in defaults but not in argument_specs"),
        (
            {"demo_port": 80},
            {"demo_port": {"default": 81}},
            "demo: demo_port defaults to 80 but argument_specs says 81",
        ),
        (
            {},
            {"demo_port": {"default": 80}},
            "demo: demo_port has a default in argument_specs only",
        ),
        ({}, {"demo_other": {"type": "str"}}, "demo: README.md does not document `demo_other`"),
    ],
)
def test_drift_is_reported(
    tmp_path: Path, defaults: dict[str, object], options: dict[str, object], problem: str
) -> None:
    assert check.check_role(make_role(tmp_path, defaults, options)) == [problem]
