"""Kernel SPECs, the Debian archive index and the vng command line, on recorded data only."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from conformance import debian
from conformance.debian import (
    Apt,
    Kernel,
    KernelNotFound,
    choose,
    compare_versions,
    from_path,
    latest_per_series,
    parse_madison,
    resolve,
)
from conformance.multikernel import PMEM_APPEND
from conformance.vm import vng_command

# Recorded from `apt-cache madison` over the private sources (bookworm, trixie, their security
# suites, trixie-backports, sid), trimmed.
SEC = "http://deb.debian.org/debian-security"
MAIN = "http://deb.debian.org/debian"
AP = "amd64 Packages"
MADISON = f"""\
linux-image-amd64 | 7.3.4-1~bpo13+1 | {MAIN} trixie-backports/main {AP}
linux-image-amd64 |   7.2.13-1 | {MAIN} sid/main {AP}
linux-image-amd64 | 6.12.118-1 | {SEC} trixie-security/main {AP}
linux-image-amd64 | 6.12.117-1 | {MAIN} trixie/main {AP}
linux-image-amd64 |  6.1.192-2 | {SEC} bookworm-security/main {AP}
linux-image-amd64 |  6.1.176-1 | {MAIN} bookworm/main {AP}
linux-image-6.1.0-50-amd64-unsigned |  6.1.176-1 | {MAIN} bookworm/main {AP}
linux-image-6.1.0-55-amd64-unsigned |  6.1.192-1 | {SEC} bookworm-security/main {AP}
linux-image-6.1.0-56-amd64-unsigned |  6.1.192-2 | {SEC} bookworm-security/main {AP}
linux-image-6.1.0-56-amd64 |  6.1.192-2 | {SEC} bookworm-security/main {AP}
linux-image-6.1.0-56-cloud-amd64-unsigned |  6.1.192-2 | {SEC} bookworm-security/main {AP}
linux-image-6.1.0-56-rt-amd64-unsigned |  6.1.192-2 | {SEC} bookworm-security/main {AP}
linux-image-6.12.117+deb12-amd64-unsigned | 6.12.117-1~deb12u1 | {SEC} bookworm-security/main {AP}
linux-image-6.12.117+deb13-amd64-unsigned | 6.12.117-1 | {MAIN} trixie/main {AP}
linux-image-6.12.117+deb13-amd64-unsigned | 6.12.117-1 | {SEC} trixie-security/main {AP}
linux-image-6.12.118+deb13-amd64-unsigned | 6.12.118-1 | {SEC} trixie-security/main {AP}
linux-image-6.16.12+deb13-amd64 | 6.16.12-1~bpo13+1 | {MAIN} trixie-backports/main {AP}
linux-image-6.16.12+deb13-cloud-amd64 | 6.16.12-1~bpo13+1 | {MAIN} trixie-backports/main {AP}
linux-image-6.19.14+deb13-amd64 | 6.19.14-1~bpo13+1 | {MAIN} trixie-backports/main {AP}
linux-image-6.19.8+deb13-amd64 | 6.19.8-1~bpo13+1 | {MAIN} trixie-backports/main {AP}
linux-image-7.3.4+deb13-amd64 | 7.3.4-1~bpo13+1 | {MAIN} trixie-backports/main {AP}
linux-binary-unsigned-7.3.4+deb13-amd64 | 7.3.4-1~bpo13+1 | {MAIN} trixie-backports/main {AP}
linux-binary-7.3.4+deb13-amd64 | 7.3.4-1~bpo13+1 | {MAIN} trixie-backports/main {AP}
linux-modules-7.3.4+deb13-amd64 | 7.3.4-1~bpo13+1 | {MAIN} trixie-backports/main {AP}
linux-base-7.3.4+deb13-amd64 | 7.3.4-1~bpo13+1 | {MAIN} trixie-backports/main {AP}
linux-image-7.2.13+deb14-amd64 |   7.2.13-1 | {MAIN} sid/main {AP}
linux-binary-7.2.13+deb14-amd64 |   7.2.13-1 | {MAIN} sid/main {AP}
linux-modules-7.2.13+deb14-amd64 |   7.2.13-1 | {MAIN} sid/main {AP}
linux-base-7.2.13+deb14-amd64 |   7.2.13-1 | {MAIN} sid/main {AP}
"""


@pytest.fixture(scope="module")
def index() -> tuple[list[debian.Build], dict[str, list[str]]]:
    return parse_madison(MADISON)


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("6.12.118-1", "6.12.117-1~deb12u1", 1),
    ("6.12.117-1~deb12u1", "6.12.117-1", -1),
    ("6.19.14-1~bpo13+1", "6.19.8-1~bpo13+1", 1),
    ("6.1.192-2", "6.1.192-2", 0),
    ("1.0~rc1-1", "1.0-1", -1),
    ("1:0.1-1", "9.9-1", 1),
    ("1.0a-1", "1.0+b1-1", -1),
])
def test_compare_versions_like_dpkg(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected


def test_latest_of_each_series(index) -> None:
    latest = {s: b.version for s, b in latest_per_series(index[0]).items()}
    assert latest == {"6.1": "6.1.192-2", "6.12": "6.12.118-1", "6.16": "6.16.12-1~bpo13+1",
                      "6.19": "6.19.14-1~bpo13+1", "7.2": "7.2.13-1", "7.3": "7.3.4-1~bpo13+1"}


def test_cloud_and_rt_flavours_are_not_builds(index) -> None:
    assert all("cloud" not in n and "rt" not in n for b in index[0] for n in b.names)


@pytest.mark.parametrize(("spec", "version", "release"), [
    ("debian:6.1", "6.1.192-2", "6.1.0-56-amd64"),
    ("debian:6.12", "6.12.118-1", "6.12.118+deb13-amd64"),
    ("debian:7.3", "7.3.4-1~bpo13+1", "7.3.4+deb13-amd64"),
    ("debian:sid", "7.2.13-1", "7.2.13+deb14-amd64"),
    ("debian:unstable", "7.2.13-1", "7.2.13+deb14-amd64"),
    ("debian:trixie", "6.12.118-1", "6.12.118+deb13-amd64"),
    ("debian:bookworm", "6.1.192-2", "6.1.0-56-amd64"),
    ("debian:trixie-backports", "7.3.4-1~bpo13+1", "7.3.4+deb13-amd64"),
    ("debian:6.1.192-1", "6.1.192-1", "6.1.0-55-amd64"),
    ("debian:6.12.117-1~deb12u1", "6.12.117-1~deb12u1", "6.12.117+deb12-amd64"),
])
def test_choose(index, spec: str, version: str, release: str) -> None:
    build = choose(spec, *index)
    assert (build.version, build.release) == (version, release)


@pytest.mark.parametrize(("version", "packages"), [
    ("6.1.192-2", ["linux-image-6.1.0-56-amd64-unsigned"]),
    ("6.16.12-1~bpo13+1", ["linux-image-6.16.12+deb13-amd64"]),
    ("7.3.4-1~bpo13+1", ["linux-binary-unsigned-7.3.4+deb13-amd64",
                         "linux-modules-7.3.4+deb13-amd64", "linux-base-7.3.4+deb13-amd64"]),
    ("7.2.13-1", ["linux-binary-7.2.13+deb14-amd64", "linux-modules-7.2.13+deb14-amd64",
                  "linux-base-7.2.13+deb14-amd64"]),
])
def test_packages_to_download(index, version: str, packages: list[str]) -> None:
    build = next(b for b in index[0] if b.version == version)
    assert build.packages() == packages


@pytest.mark.parametrize("spec", ["debian:5.99", "debian:6.1.158-1", "debian:buster"])
def test_unknown_kernel_names_what_is_available(index, spec: str) -> None:
    with pytest.raises(KernelNotFound) as e:
        choose(spec, *index)
    assert str(e.value) == (
        f"unknown kernel {spec}; available: debian:6.1 (6.1.192-2), debian:6.12 (6.12.118-1), "
        "debian:6.16 (6.16.12-1~bpo13+1), debian:6.19 (6.19.14-1~bpo13+1), "
        "debian:7.2 (7.2.13-1), debian:7.3 (7.3.4-1~bpo13+1); suites: debian:bookworm, "
        "debian:trixie, debian:trixie-backports, debian:sid")


def test_private_apt_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian, "KEYRING", tmp_path / "keyring.gpg")
    debian.KEYRING.write_bytes(b"")
    apt = Apt(tmp_path / "apt")
    apt.setup()
    sources = apt.sources.read_text().splitlines()
    assert all(f"signed-by={tmp_path / 'keyring.gpg'}" in line for line in sources)
    assert {line.split()[-2] for line in sources} == {
        "bookworm", "bookworm-security", "trixie", "trixie-security", "trixie-backports", "sid"}
    opts = apt.options()
    assert f"Dir::Etc::sourcelist={apt.sources}" in opts
    assert "Dir::Etc::sourceparts=-" in opts
    assert f"Dir::State::Lists={apt.lists}" in opts


def test_the_index_is_kept_until_the_lists_change(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(debian, "KEYRING", tmp_path / "keyring.gpg")
    debian.KEYRING.write_bytes(b"")
    apt = Apt(tmp_path / "apt")
    apt.setup()
    (apt.lists / "deb.debian.org_debian_dists_trixie_InRelease").write_text("one")
    asked: list[str] = []

    def run(tool: str, *args: str, cwd=None) -> str:
        asked.append(args[0])
        return "linux-image-7.2.13+deb14-amd64 - Linux 7.2\n" if args[0] == "search" else MADISON

    monkeypatch.setattr(apt, "run", run)
    first = apt.index()
    assert asked == ["search", "madison"]
    assert apt.index() == first and len(asked) == 2, "asked again with the lists unchanged"
    (apt.lists / "deb.debian.org_debian_dists_trixie_InRelease").write_text("updated")
    assert apt.index() == first and len(asked) == 4, "the lists changed: ask apt-cache again"


def _bzimage(path: Path, release: str) -> None:
    head = bytearray(0x400)
    head[0x202:0x206] = b"HdrS"
    head[0x20E:0x210] = struct.pack("<H", 0x300 - 0x200)
    version = f"{release} (builder@host) #1 SMP".encode()
    head[0x300:0x300 + len(version)] = version
    path.write_bytes(bytes(head))


def test_vmlinuz_path_gives_release_and_config(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    (tmp_path / "lib" / "modules" / "6.18.0-test").mkdir(parents=True)
    _bzimage(tmp_path / "boot" / "vmlinuz-6.18.0-test", "6.18.0-test")
    (tmp_path / "boot" / "config-6.18.0-test").write_text("CONFIG_UDMABUF=y\n")
    k = resolve(str(tmp_path / "boot" / "vmlinuz-6.18.0-test"))
    assert k.release == "6.18.0-test"
    assert k.config().state("CONFIG_UDMABUF") == "y"
    assert k.config().state("CONFIG_GUP_TEST") == "n"


def test_build_tree_boots_as_a_directory(tmp_path: Path) -> None:
    (tmp_path / "arch" / "x86" / "boot").mkdir(parents=True)
    _bzimage(tmp_path / "arch" / "x86" / "boot" / "bzImage", "7.4.0-rc1+")
    (tmp_path / ".config").write_text("CONFIG_GUP_TEST=y\n")
    k = from_path(str(tmp_path), tmp_path)
    assert (k.release, k.build_dir, k.config().state("CONFIG_GUP_TEST")) == (
        "7.4.0-rc1+", tmp_path, "y")


@pytest.mark.parametrize("content", [None, b"not a kernel"])
def test_bad_kernel_path_is_one_line(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "vmlinuz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KernelNotFound) as e:
        resolve(str(path))
    assert "\n" not in str(e.value)


def test_extracted_version_is_reused_without_apt(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "kernels" / "6.1.192-2"
    (root / "lib" / "modules" / "6.1.0-56-amd64" / "kernel").mkdir(parents=True)
    (root / "boot").mkdir()
    monkeypatch.setattr(Apt, "run", lambda *a, **k: pytest.fail("apt was called"))
    k = resolve("debian:6.1.192-2", cache=tmp_path)
    assert (k.release, k.package_version) == ("6.1.0-56-amd64", "6.1.192-2")
    assert k.vmlinuz == root / "boot" / "vmlinuz-6.1.0-56-amd64"


KERNEL = Kernel("6.12.118+deb13-amd64", "6.12.118-1", Path("/k/boot/vmlinuz"),
                Path("/k/boot/config"))


def test_vng_command_tcg_with_fsdax() -> None:
    cmd = vng_command(KERNEL, "sh /r/run.sh", accel="tcg", append=[PMEM_APPEND[0]],
                      rwdirs=[Path("/r")])
    assert cmd == ["vng", "--verbose", "--force-9p", "--cpus", "2", "--memory", "2G",
                   "--run", "/k/boot/vmlinuz", "--disable-kvm",
                   "--append", "oops=panic", "--append", "module_blacklist=kvm,kvm_amd,kvm_intel",
                   "--append", PMEM_APPEND[0], "--rwdir", "/r", "--exec", "sh /r/run.sh"]


def test_vng_command_kvm_and_build_dir() -> None:
    tree = Kernel("7.4.0-rc1", None, Path("/src/linux/arch/x86/boot/bzImage"),
                  Path("/src/linux/.config"), build_dir=Path("/src/linux"))
    cmd = vng_command(tree, "true", accel="kvm", memory="4G", cpus=4)
    assert "--disable-kvm" not in cmd
    assert not any(a.startswith("module_blacklist") for a in cmd)
    assert cmd[cmd.index("--run") + 1] == "/src/linux"
    assert cmd[cmd.index("--memory") + 1] == "4G" and cmd[cmd.index("--cpus") + 1] == "4"


def test_vng_finds_its_helpers_without_the_venv_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """vng calls virtme-run by name: pinhole's own bin directory must come first on PATH."""
    import sys

    from conformance import vm

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    path = vm.tool_env()["PATH"].split(":")
    assert path[0] == str(Path(sys.executable).parent) and path[1:] == ["/usr/bin", "/bin"]


CONSOLE_VIRTME_MISSING = """\
/bin/sh: 1: virtme-run: not found
"""
CONSOLE_QEMU = """\
virtme: waiting for virtiofsd
qemu-system-x86_64: -device virtio-9p-pci: cannot setup 9p: No such file or directory
Shutting down
"""


def test_a_lost_vm_says_why() -> None:
    from conformance import vm

    assert vm.why_lost(CONSOLE_VIRTME_MISSING) == "/bin/sh: 1: virtme-run: not found"
    assert "cannot setup 9p" in vm.why_lost(CONSOLE_QEMU)
    assert vm.why_lost("") == "no output at all from vng"


@pytest.mark.parametrize("kvm,tcg,verdict,cached", [
    ("ok", "ok", "kvm", True), ("timeout", "ok", "tcg", True), ("lost", "lost", "tcg", False)])
def test_kvm_verdict_is_kept_only_from_a_boot_that_reached_a_guest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kvm: str, tcg: str, verdict: str,
        cached: bool) -> None:
    from conformance import vm

    monkeypatch.delenv("PINHOLE_ACCEL", raising=False)
    monkeypatch.setattr(vm, "_verdict_file", lambda: tmp_path / "kvm-verdict")
    monkeypatch.setattr(vm.os, "access", lambda *_: True)
    outcomes = {"kvm": kvm, "tcg": tcg}

    def boot(kernel, command, *, timeout, accel, **_):
        return vm.VmResult(outcomes[accel], 0, "", "", "", accel, 0, 0, 0, [])

    monkeypatch.setattr(vm, "boot_and_run", boot)
    assert vm.accelerator(KERNEL) == verdict
    assert (tmp_path / "kvm-verdict").exists() == cached


def test_a_boot_after_a_panic_adds_to_the_records_of_the_boot_before() -> None:
    from conformance import multikernel, results, vm

    def rec(case_id: str, verdict: str = "pass") -> dict:
        return {"id": case_id, **results.dimensions_of(case_id), **results.DEFAULTS,
                "verdict": verdict}

    first = [rec("io_uring.memfd.shared.rw.hole.none.admission"),
             rec("io_uring.memfd.shared.rw.written.none.admission", "fail")]
    last = results.document([rec("io_uring.memfd.private.rw.hole.none.admission")],
                            {"release": "6.12.0"}, {}, 200.0, 300.0)
    panics = [{"boot": 1, "cut_off": ["io_uring.memfd.shared.rw.written.none.admission"]}]
    ok = vm.VmResult("ok", 0, "", "", "", "tcg", 1.0, 2.0, 3.0, [], "")
    doc = multikernel.after_panics(last, first, panics, 3, ok, 100.0)
    assert [c["id"] for c in doc["cases"]] == sorted(c["id"] for c in first + last["cases"])
    assert doc["totals"]["fail"] == 1 and doc["started"] == 100.0 and doc["panics"] == panics
    assert "incomplete" not in doc
    # The last boot panicked too, beyond the limit: incomplete, counting every boot's cases.
    died = dict(last, cut_off=["io_uring.memfd.private.rw.hole.none.admission"],
                incomplete="x")
    panic = vm.VmResult("panic", None, "", "", "", "tcg", 1.0, 2.0, 3.0, [], "")
    doc = multikernel.after_panics(died, first, panics, 3, panic, 100.0)
    assert doc["incomplete"] == ("the kernel panicked: 1 of 3 cases finished; cut off while "
                                 "running: io_uring.memfd.private.rw.hole.none.admission")
