"""The kernel view's own logic: finding this kernel's vmlinux (build IDs and DWARF of real ELF
files that gcc makes here), the reasoned skip, page-cache indices, and how pinned pages fold
into an outcome and a detail. The kernel view itself runs on real kernels in VMs
(validation/kernelview.py; test_kernel_view_in_a_vm below where the debug build is cached)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import kernelview
from conformance.kernelview import debuginfo, folios
from conformance.kernelview.folios import PageView, file_indices, summarize

ROOT = Path(__file__).resolve().parent.parent


def note(name: bytes, kind: int, desc: bytes) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name) + 1, len(desc), kind) + pad(name + b"\0") + pad(desc)


def test_build_id_from_notes_skips_other_notes() -> None:
    data = note(b"Xen", 6, b"\1\2\3") + note(b"GNU", 3, bytes.fromhex("c0ffee")) + note(
        b"Linux", 1, b"x")
    assert debuginfo._build_id(data) == "c0ffee"
    assert debuginfo._build_id(note(b"Linux", 3, b"x")) is None


def _compile(tmp: Path, name: str, *flags: str) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("needs gcc to make ELF files")
    src = tmp / "x.c"
    src.write_text("int main(void) { return 0; }\n")
    out = tmp / name
    subprocess.run(["gcc", *flags, "-o", str(out), str(src)], check=True)
    return out


def test_elf_facts_reads_build_id_and_dwarf(tmp_path: Path) -> None:
    with_dwarf = _compile(tmp_path, "g", "-g", "-Wl,--build-id=0xdeadbeef")
    without = _compile(tmp_path, "s", "-Wl,--build-id=0xfeed")
    assert debuginfo.elf_facts(with_dwarf) == ("deadbeef", True)
    assert debuginfo.elf_facts(without) == ("feed", False)
    (tmp_path / "text").write_text("not an ELF file at all, but long enough " * 4)
    assert debuginfo.elf_facts(tmp_path / "text") == (None, False)


def _running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, build_id: str) -> None:
    notes = tmp_path / "notes"
    notes.write_bytes(note(b"GNU", 3, bytes.fromhex(build_id)))
    monkeypatch.setattr(debuginfo, "NOTES", notes)
    monkeypatch.setattr(debuginfo, "STANDARD", ())


def test_find_vmlinux_wants_this_build_with_dwarf(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    good = _compile(tmp_path, "good", "-g", "-Wl,--build-id=0xdeadbeef")
    stripped = _compile(tmp_path, "stripped", "-Wl,--build-id=0xdeadbeef")
    other = _compile(tmp_path, "other", "-g", "-Wl,--build-id=0xabcd")
    _running(monkeypatch, tmp_path, "deadbeef")
    monkeypatch.setenv(debuginfo.ENV, str(good))
    assert debuginfo.find_vmlinux("6.12.0") == (good, f"{good} (build ID deadbeef)")
    monkeypatch.setenv(debuginfo.ENV, str(other))
    assert debuginfo.find_vmlinux("6.12.0") == (
        None, f"{other} is another build (build ID abcd, the kernel's is deadbeef)")
    monkeypatch.setenv(debuginfo.ENV, str(stripped))
    assert debuginfo.find_vmlinux("6.12.0") == (
        None, f"{stripped} has no DWARF (built without CONFIG_DEBUG_INFO)")
    monkeypatch.setenv(debuginfo.ENV, str(tmp_path / "absent"))
    assert debuginfo.find_vmlinux("6.12.0") == (None, f"{tmp_path / 'absent'} (absent)")


def test_skip_says_how_to_get_debug_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debuginfo, "dbg_size", lambda r: "1042 MB to download, 6.8 GB unpacked")
    debian = debuginfo.how_to_get("6.12.118+deb13-amd64")
    assert "linux-image-6.12.118+deb13-amd64-dbg (1042 MB to download" in debian
    assert "usr/lib/debug/boot/vmlinux-6.12.118+deb13-amd64" in debian
    assert "linux-image-6.1.0-44-amd64-dbg" in debuginfo.how_to_get("6.1.0-44-amd64")
    built = debuginfo.how_to_get("6.12.118")
    assert "pinhole matrix --kernel debian-src:6.12" in built and debuginfo.ENV in built


def test_availability_skips_with_a_reason_here(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """On a kernel without debug info at hand (the reason names how to get it); the check
    itself then raises that skip, and nothing imported drgn for a run that did not ask."""
    _running(monkeypatch, tmp_path, "deadbeef")
    monkeypatch.delenv(debuginfo.ENV, raising=False)
    verdict = kernelview.availability()
    assert not verdict.ok
    assert any(w in verdict.reason for w in ("drgn", "kcore", "debug info")), verdict.reason


def test_importing_the_check_does_not_import_drgn() -> None:
    code = ("import sys, conformance.kernelview, conformance.multikernel; "
            "print('drgn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "False"


def test_vmlinux_for_a_build_a_tree_and_a_debian_package(tmp_path: Path) -> None:
    build = tmp_path / "builds" / "k"
    build.mkdir(parents=True)
    (build / "vmlinux").write_bytes(b"")
    vmlinuz = tmp_path / "kernels" / "6.12.118-1" / "boot" / "vmlinuz-R"
    assert debuginfo.vmlinux_for(build / "config", build / "bzImage", "R") == build / "vmlinux"
    assert debuginfo.vmlinux_for(None, vmlinuz, "R") is None
    dbg = vmlinuz.parent.parent / "usr" / "lib" / "debug" / "boot" / "vmlinux-R"
    dbg.parent.mkdir(parents=True)
    dbg.write_bytes(b"")
    assert debuginfo.vmlinux_for(None, vmlinuz, "R") == dbg


def test_hugetlb_indices_follow_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """hugetlbfs indexed its page cache in huge pages before v6.7 (a08c7193e4f1)."""
    offset = 2 << 20  # the second 2 MiB page of the file
    monkeypatch.setattr(folios, "kernel_version", lambda: (6, 12))
    assert file_indices(offset, 512, True, 21)[:2] == [512, 513]
    monkeypatch.setattr(folios, "kernel_version", lambda: (6, 1))
    assert set(file_indices(offset, 512, True, 21)) == {1}
    assert file_indices(4096, 1, False, 12) == [1]


def page(pfn: int, outcome: str, index: int, folio: int | None = None) -> PageView:
    return PageView(pfn=pfn, folio_pfn=pfn if folio is None else folio, order=0,
                    flags="PG_uptodate|PG_lru", refcount=1026, pincount=None, dma_pinned=True,
                    owner="file 0xffff888004a3c0d0", index=index, cache=f"folio pfn {pfn:#x}",
                    outcome=outcome)


def test_summary_takes_the_worst_page_and_folds_a_folio() -> None:
    huge = [PageView(pfn=0x200000 + k, folio_pfn=0x200000, order=9, flags="PG_head",
                     refcount=3, pincount=1, dma_pinned=True, owner="file 0x1", index=512 + k,
                     cache="folio pfn 0x200000", outcome="same-folio") for k in range(512)]
    outcome, detail = summarize(huge)
    assert outcome == "same-folio"
    assert detail == ("pfns 0x200000-0x2001ff (512): same-folio; folio pfn 0x200000 order 9 "
                      "[PG_head] refcount 3, pincount 1, maybe-dma-pinned, mapping file 0x1; "
                      "page cache at indices 512-1023: folio pfn 0x200000")
    outcome, detail = summarize([page(0x10, "same-folio", 1), page(0x99, "orphan", 2)])
    assert outcome == "orphan" and len(detail.splitlines()) == 2
    assert summarize([page(0x10, "private-copy", 1), page(0x3, "zeropage", 2)])[0] == "zeropage"


def test_outcomes_are_the_issue_s_and_private_copy() -> None:
    assert set(kernelview.OUTCOMES) == {"same-folio", "zeropage", "orphan", "other-folio",
                                        "private-copy"}


VIEW_CACHE = Path.home() / ".cache" / "pinhole" / "builds"


def _debug_build() -> Path | None:
    """A cached pinhole build of the current fragment (with DWARF), if there is one."""
    from conformance import kbuild

    memo = Path.home() / ".cache" / "pinhole" / "src" / "newest-6.12"
    if not memo.is_file():
        return None
    key = kbuild.cache_key(memo.read_text().strip(), kbuild.FRAGMENT.read_text(), [])
    return VIEW_CACHE / key if (VIEW_CACHE / key / "bzImage").is_file() else None


@pytest.mark.skipif(_debug_build() is None, reason="needs the pinhole kernel with debug info "
                    "built (pinhole matrix --kernel debian-src:6.12 builds it)")
def test_kernel_view_in_a_vm(tmp_path: Path) -> None:
    """The real thing on the pinhole kernel: a gup_test pin of a memfd hole holds the file's
    folio; after truncate the pin holds a folio in no page cache."""
    from conformance import kbuild, kernelview, vm

    kernel = kbuild.resolve("debian-src:6.12", [])
    env = " ".join(f"{k}={v}" for k, v in kernelview.guest_env(kernel).items())
    tmp_path.chmod(0o777)
    cells = ["gup_test.memfd.shared.ro.hole.none", "gup_test.memfd.shared.ro.hole.truncate-down"]
    cmd = (f"cd {ROOT} && {env} {sys.executable} validation/kernelview.py --guest {tmp_path} "
           + " ".join(cells))
    res = vm.boot_and_run(kernel, cmd, timeout=600, rwdirs=[tmp_path])
    assert res.outcome == "ok", res.stdout[-2000:] + res.console_tail
    doc = json.loads((tmp_path / "kernelview.json").read_text())
    seen = {r["cell"]: r["kernel-view"]["outcome"] for r in doc["records"]}
    assert seen == {cells[0]: "same-folio", cells[1]: "orphan"}, doc


def test_agreement_compares_only_where_both_said_something() -> None:
    sys.path.insert(0, str(ROOT / "validation"))
    import kernelview as driver  # validation/kernelview.py

    def rec(cell: str, kv: str | None, fp: str, zp: str = "pinned") -> dict:
        return {"cell": cell, "kernel-view": {"outcome": kv, "detail": "d"} if kv else
                {"error": "Skip: no debug info"},
                "file-to-pin": {"outcome": fp}, "zeropage": {"outcome": zp}}

    got = driver.agreement([
        rec("io_uring.memfd.shared.rw.hole.none", "same-folio", "coherent"),
        rec("vmsplice.ext4.shared.ro.hole.truncate-down", "orphan", "detached"),
        rec("gup_test.memfd.shared.ro.hole.none", "zeropage", "disconnected", "disconnected"),
        rec("rdma.memfd.shared.ro.hole.none", "same-folio", "disconnected"),
        rec("udmabuf.memfd.shared.rw.hole.none", None, "coherent"),
        rec("io_uring.ext4.shared.rw.hole.none", "same-folio", "refused", "refused"),
    ])
    # file-to-pin on 4 cells and zeropage on the 3 'none' ones; one disagreement.
    assert (got["compared"], got["agreed"]) == (7, 6)
    assert [d["cell"] for d in got["disagreements"]] == ["rdma.memfd.shared.ro.hole.none"]
