"""The sandbox's Debian 12 root file system: built once with debootstrap, then cached.

The cache key is a hash of the suite, the package list and the preparation recipe, so
the root file system is rebuilt only when one of those changes. A build goes into a
temporary directory and is renamed into place when complete, under a lock, so an
interrupted or concurrent build never leaves a half-made tree that looks finished.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from clusterai_runner.adapters.files import locked
from clusterai_runner.errors import RunFailed, UsageError

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = (
    "ca-certificates",
    "curl",
    "dbus",
    "iproute2",
    "openssh-server",
    "python3",
    "sudo",
    "systemd",
    "systemd-sysv",
)
# Bump when prepare() changes what it does to the tree, so caches are rebuilt.
RECIPE_VERSION = 1

# Units that only make sense on a console or real hardware; masked so that systemd in
# the container reaches "running" rather than "degraded".
_MASKED_UNITS = ("console-getty.service", "getty@tty1.service")

APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))

Progress = Callable[[str], None]


def cache_key(suite: str = SUITE, packages: tuple[str, ...] = PACKAGES) -> str:
    """Return the short hash naming the cached tree for this recipe."""
    text = "\n".join([suite, VARIANT, str(RECIPE_VERSION), *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _source_files(paths: tuple[Path, ...]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix in {".list", ".sources"})


def find_debian_mirror(paths: tuple[Path, ...] = APT_SOURCES) -> str | None:
    """Return the first Debian archive URI in apt's sources (one-line or deb822 format).

    A Debian archive is recognised by its path ending in ``/debian``, which leaves out
    security, backports-only and third-party repositories.
    """
    for path in _source_files(paths):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            uris: list[str] = []
            if line.startswith("deb "):
                rest = line[4:].strip()
                if rest.startswith("["):  # an options block: "[arch=amd64 signed-by=...]"
                    rest = rest.split("]", 1)[-1]
                uris = rest.split()[:1]
            elif line.lower().startswith("uris:"):
                uris = line.split(":", 1)[1].split()
            for uri in uris:
                if re.match(r"^https?://", uri) and uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return None


def prepare(root: Path) -> None:
    """Turn a fresh debootstrap tree into a template that every host copies.

    Host keys and the machine id are removed (each host gets its own), the apt cache
    is emptied, and console-only units are masked.
    """
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("localhost\n")
    for unit in _MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    archives = root / "var/cache/apt/archives"
    for deb in archives.glob("*.deb"):
        deb.unlink()


def cached_path(cache_dir: Path) -> Path:
    """Where the root file system for the current recipe is cached."""
    return cache_dir / "sandbox" / f"rootfs-{cache_key()}"


def ensure_rootfs(
    cache_dir: Path, mirror: str | None, progress: Progress, in_use: Collection[Path] = ()
) -> Path:
    """Return the cached root file system, building it first if it is missing.

    Trees from older recipes are deleted after a build, except those in ``in_use``:
    existing sandbox hosts have them mounted below their overlays.
    """
    final = cached_path(cache_dir)
    sandbox_cache = final.parent
    key = cache_key()
    if final.is_dir():
        return final
    with locked(sandbox_cache / "rootfs.lock"):
        if final.is_dir():  # another process built it while we waited
            return final
        if mirror is None:
            mirror = find_debian_mirror()
        if mirror is None:
            raise UsageError(
                "sandbox root file system",
                "no Debian mirror found in /etc/apt/sources.list or sources.list.d",
                "set CLUSTERAI_SANDBOX_MIRROR to a Debian mirror URL ending in /debian",
            )
        building = sandbox_cache / f"rootfs-{key}.building"
        log = sandbox_cache / f"rootfs-{key}.log"
        shutil.rmtree(building, ignore_errors=True)
        progress(f"building the Debian {SUITE} root file system once (about a minute); log: {log}")
        command = [
            "debootstrap",
            f"--variant={VARIANT}",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(building),
            mirror,
        ]
        try:
            with log.open("w") as out:
                result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
            if result.returncode != 0:
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
                raise RunFailed(
                    "sandbox root file system",
                    f"debootstrap exited {result.returncode}: {tail}",
                    f"see {log}; check that {mirror} is reachable",
                )
            prepare(building)
            building.rename(final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        # Trees built from an older recipe are never used again.
        for stale in sandbox_cache.glob("rootfs-*"):
            if stale.is_dir() and stale != final and stale not in in_use:
                shutil.rmtree(stale, ignore_errors=True)
        progress("root file system cached: " + str(final))
        return final
