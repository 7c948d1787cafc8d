"""Where a test run's time went, from the file CLUSTERAI_TEST_TIMELINE=FILE made
(tests/conftest.py): each pytest-xdist worker's units (a module, or the modules run
together) with their start, end and length, and the run's idle worker time.

    CLUSTERAI_TEST_TIMELINE=/tmp/timeline.jsonl make test
    python scripts/timeline.py /tmp/timeline.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import work_unit


def main(path: str) -> int:
    try:
        lines = Path(path).read_text().splitlines()
        tests = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as error:
        print(f"error: {path}: {error} (a file CLUSTERAI_TEST_TIMELINE=FILE wrote)")
        return 2
    if not tests:
        print(f"error: {path}: no test recorded (was CLUSTERAI_TEST_TIMELINE set?)")
        return 2
    begin = min(t["start"] for t in tests)
    end = max(t["end"] for t in tests)
    # A unit's span on its worker: from its first test's start to its last test's end.
    spans: dict[tuple[str, str], list[float]] = defaultdict(lambda: [float("inf"), 0.0, 0])
    for test in tests:
        unit = work_unit(test["test"]).split("::", 1)[0]
        span = spans[(test["worker"], unit)]
        span[0], span[1] = min(span[0], test["start"]), max(span[1], test["end"])
        span[2] += 1
    print(f"run: {end - begin:.0f} s, {len(tests)} tests")
    for worker in sorted({w for w, _ in spans}):
        units = sorted((s, e, n, u) for (w, u), (s, e, n) in spans.items() if w == worker)
        busy = sum(e - s for s, e, _, _ in units)
        print(f"\n{worker}: busy {busy:.0f} s of {end - begin:.0f} s")
        for start, stop, count, unit in units:
            if stop - start >= 5:
                print(f"  {start - begin:6.0f} {stop - begin:6.0f} {stop - start:6.0f} s"
                      f"  {unit} ({count})")  # fmt: skip
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python scripts/timeline.py TIMELINE.jsonl", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
