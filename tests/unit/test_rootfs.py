from pathlib import Path

from clusterai_runner.sandbox import rootfs


def test_cache_key_changes_only_with_the_recipe() -> None:
    assert rootfs.cache_key() == rootfs.cache_key()
    assert rootfs.cache_key(packages=(*rootfs.PACKAGES, "vim")) != rootfs.cache_key()
    assert rootfs.cache_key(suite="trixie") != rootfs.cache_key()
    # Order of the package list does not matter.
    assert rootfs.cache_key(packages=tuple(reversed(rootfs.PACKAGES))) == rootfs.cache_key()


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text(
        "Types: deb\n"
        "# http://snapshot.example/archive/debian/20250520T000000Z\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\n"
    )
    (sources / "other.sources.disabled").write_text("URIs: http://nope.example/debian\n")
    assert rootfs.find_debian_mirror((tmp_path / "sources.list", sources)) == (
        "http://mirror.example/debian"
    )


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] https://vendor.example/apt stable main\n"
        "deb [signed-by=/k2.gpg] https://mirror.example/debian bookworm main\n"
    )
    assert rootfs.find_debian_mirror((listing,)) == "https://mirror.example/debian"


def test_no_mirror_found(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text("deb http://archive.example/ubuntu jammy main\n")
    assert rootfs.find_debian_mirror((listing, tmp_path / "missing.d")) is None


def test_prepare_strips_identity_and_masks_console_units(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for directory in ("etc/ssh", "etc/systemd/system", "var/cache/apt/archives"):
        (root / directory).mkdir(parents=True)
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("secret")
    (root / "etc/ssh/ssh_host_ed25519_key.pub").write_text("public")
    (root / "etc/ssh/sshd_config").write_text("kept")
    (root / "etc/machine-id").write_text("0123456789abcdef\n")
    (root / "var/cache/apt/archives/sudo.deb").write_text("deb")
    rootfs.prepare(root)
    assert sorted(p.name for p in (root / "etc/ssh").iterdir()) == ["sshd_config"]
    assert (root / "etc/machine-id").read_text() == ""
    assert not (root / "var/cache/apt/archives/sudo.deb").exists()
    for unit in ("console-getty.service", "getty@tty1.service"):
        assert (root / "etc/systemd/system" / unit).readlink() == Path("/dev/null")
    rootfs.prepare(root)  # safe to repeat
