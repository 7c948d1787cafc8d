#!/usr/bin/env python3
"""Write the SHA-256 of every file pip may fetch for each pin of a requirements file.

A role's pinned requirements (the gateway's wheels, llama.cpp's build inputs) are
installed with ``pip --require-hashes``: each ``name==version`` line carries a
``--hash=sha256:`` for every file that may stand for it, one binary wheel per platform the
roles support (CPython 3.11 on x86_64 and aarch64, Debian 12's), or the source archive of
a package built from source. This script downloads those files with pip, from whatever
index pip is configured to use, and rewrites the file in place with their hashes; the
comments and the order of the pins are kept. Run it after changing a pin:

    python scripts/wheel_hashes.py roles/gateway/files/requirements.txt
    python scripts/wheel_hashes.py roles/llamacpp_server/files/requirements-0.3.36.txt \\
        --sdist llama-cpp-python
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PYTHON = "3.11"
# The wheels pip may pick for each architecture: on Debian 12 itself (glibc 2.36: the
# newest manylinux tag up to 2_36, as the controller's pip wheel does), and for a host
# from elsewhere (the gateway role asks for manylinux_2_28 and older).
PLATFORMS = {
    f"{arch}-{kind}": tags
    for arch in ("x86_64", "aarch64")
    for kind, tags in (
        ("native", [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]),
        ("portable", [f"manylinux_2_28_{arch}", f"manylinux_2_17_{arch}", f"manylinux2014_{arch}"]),
    )
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503's name, as a file name's first part compares with a pin's."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_name(requirement: str) -> str:
    """The normalized name a ``name[extras]==version`` requirement pins."""
    match = PIN.match(requirement)
    if not match:
        raise SystemExit(f"error: {requirement!r} is not pinned with == (pin it first)")
    return normalize(match.group(1))


def parse(text: str) -> list[tuple[list[str], str]]:
    """The file as (comment lines, requirement without hashes) pairs, in order; comment
    lines after the last requirement come as a pair with an empty requirement."""
    entries: list[tuple[list[str], str]] = []
    comments: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            comments.append(line)
            continue
        pending += " " + stripped.removesuffix("\\")
        if stripped.endswith("\\"):
            continue
        requirement = re.sub(r"\s+--hash=\S+", "", pending).strip()
        pending = ""
        pinned_name(requirement)
        entries.append((comments, requirement))
        comments = []
    if comments:
        entries.append((comments, ""))
    return entries


def render(entries: list[tuple[list[str], str]], hashes: dict[str, list[str]]) -> str:
    """The file again, each requirement followed by its sorted hashes."""
    lines: list[str] = []
    for comments, requirement in entries:
        lines.extend(comments)
        if not requirement:
            continue
        digests = sorted(set(hashes.get(pinned_name(requirement), [])))
        if not digests:
            raise SystemExit(f"error: pip fetched no file for {requirement}")
        lines.append(requirement + " \\")
        lines.extend(
            f"    --hash=sha256:{digest}" + (" \\" if i < len(digests) - 1 else "")
            for i, digest in enumerate(digests)
        )
    return "\n".join(lines) + "\n"


def file_name(path: Path) -> str:
    """The distribution name a wheel or source archive is for."""
    stem = path.name.removesuffix(".tar.gz").removesuffix(".zip").removesuffix(".whl")
    return normalize(stem.split("-")[0] if path.suffix == ".whl" else stem.rpartition("-")[0])


def download(requirements: list[str], sdists: set[str], into: Path) -> None:
    wheels = [r for r in requirements if pinned_name(r) not in sdists]
    sources = [r for r in requirements if pinned_name(r) in sdists]
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest"]
    for platform_name, tags in PLATFORMS.items():
        platform = [f"--platform={tag}" for tag in tags]
        subprocess.run(
            [*pip, str(into / platform_name), "--only-binary=:all:", "--implementation=cp",
             f"--python-version={PYTHON}", f"--abi=cp{PYTHON.replace('.', '')}",
             *platform, *wheels],
            check=True,
        )  # fmt: skip
    if sources:
        names = ",".join(sorted(sdists))
        subprocess.run([*pip, str(into / "sdist"), f"--no-binary={names}", *sources], check=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="a requirements file of == pins")
    parser.add_argument("--sdist", action="append", default=[], help="a package built from source")
    args = parser.parse_args(argv)
    entries = parse(args.file.read_text())
    requirements = [requirement for _, requirement in entries if requirement]
    hashes: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        download(requirements, {normalize(name) for name in args.sdist}, Path(scratch))
        for path in sorted(Path(scratch).rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                hashes.setdefault(file_name(path), []).append(digest)
    args.file.write_text(render(entries, hashes))
    print(f"{args.file}: {len(requirements)} pins, {sum(map(len, hashes.values()))} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
