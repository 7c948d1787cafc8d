#!/usr/bin/env python3
"""Print the roles/ollama/vars/main.yml entry for an Ollama release's Linux archives.

Reads the release's sha256sum.txt (downloaded from the release page, or a copy given with
--from for machines without access) and prints the SHA-256 of each Linux archive the
role installs, ready to paste under ``_ollama_checksums``:

    python scripts/ollama_checksums.py 0.7.0
    python scripts/ollama_checksums.py 0.7.0 --from sha256sum.txt
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.request

RELEASES = "https://github.com/ollama/ollama/releases/download"
ARCHES = ("amd64", "arm64")


def parse(text: str) -> dict[str, str]:
    """Map architecture to SHA-256, from lines like ``<hex>  ./ollama-linux-amd64.tgz``."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([0-9a-f]{64})\s+\*?(?:\./)?ollama-linux-(\w+)\.tgz", line.strip())
        if match and match.group(2) in ARCHES:
            found[match.group(2)] = match.group(1)
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", help="release version, e.g. 0.7.0")
    parser.add_argument("--from", dest="source", help="a local copy of the sha256sum.txt")
    args = parser.parse_args(argv)
    if args.source:
        with open(args.source) as handle:
            text = handle.read()
    else:
        url = f"{RELEASES}/v{args.version}/sha256sum.txt"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
    sums = parse(text)
    if not sums:
        print(
            f"error: no ollama-linux-*.tgz line in the sha256sum.txt of {args.version}",
            file=sys.stderr,
        )
        return 1
    print(f"  {args.version}:")
    for arch in ARCHES:
        if arch in sums:
            print(f"    {arch}: {sums[arch]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
