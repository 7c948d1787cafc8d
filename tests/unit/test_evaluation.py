"""The rollout's evaluation gate: the shipped prompt set, a file's mistakes named one by
one, each rule, and the verdict (the new model must pass what the old one passes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterai_runner.errors import UsageError
from clusterai_runner.usecases import evaluation
from clusterai_runner.usecases.evaluation import Case, Outcome


def test_the_shipped_set_loads() -> None:
    cases = evaluation.load(evaluation.DEFAULT)
    assert [c.name for c in cases] == ["capital", "json"]
    assert cases[0].contains == ("Paris",) and cases[1].json and cases[0].max_latency_s == 60


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cases: [", "is not YAML (line 1)"),
        ("cases: []", "holds no list of cases under `cases:`"),
        ("cases: [hello]", "cases[0]: is not a mapping"),
        ("cases: [{name: a, prompt: p, contain: x}]", "cases[0].contain: is not a rule"),
        ("cases: [{prompt: p, contains: x}]", "cases[0].name: must be a name of its own"),
        ("cases: [{name: a, prompt: p, contains: x}, {name: a, prompt: q, json: true}]",
         "cases[1].name: must be a name of its own"),
        ("cases: [{name: a, prompt: '', contains: x}]", "cases[0].prompt: must be the text"),
        ("cases: [{name: a, prompt: p, contains: [1]}]", "cases[0].contains: must be a text"),
        ("cases: [{name: a, prompt: p, json: 'yes'}]", "cases[0].json: must be true or false"),
        ("cases: [{name: a, prompt: p, max_latency_s: 0}]", "max_latency_s: must be a number"),
        ("cases: [{name: a, prompt: p, json: true, max_tokens: 0}]", "max_tokens: must be"),
        ("cases: [{name: a, prompt: p}]", "cases[0]: has no rule"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_line_naming_the_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "eval.yml"
    path.write_text(text)
    with pytest.raises(UsageError) as refused:
        evaluation.load(path)
    assert problem in str(refused.value) and str(path) in str(refused.value)
    assert refused.value.exit_code == 2


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope.yml: cannot be read"):
        evaluation.load(tmp_path / "nope.yml")


def test_each_rule() -> None:
    case = Case("a", "p", ("Paris", "France"), True, 2.0)
    assert evaluation.check(case, '```json\n{"city": "paris, france"}\n```', 1.0) == []
    assert evaluation.check(case, "Lyon", 3.5) == [
        "no 'Paris'", "no 'France'", "not JSON", "3.5 s, over 2 s"]  # fmt: skip


def test_the_new_model_must_pass_what_the_old_one_passes() -> None:
    def outcomes(*passed: bool) -> list[Outcome]:
        return [Outcome(f"c{i}", p, [] if p else ["not JSON"]) for i, p in enumerate(passed)]

    assert evaluation.verdict(outcomes(True, False), outcomes(True, False), "old", "new") == ""
    assert evaluation.verdict(outcomes(False, False), outcomes(True, False), "old", "new") == ""
    assert evaluation.verdict(outcomes(True, True), outcomes(True, False), "old:1", "new:2") == (
        "new:2 fails what old:1 passes: c1 (not JSON)")  # fmt: skip
