"""Hostile input for ``afpbench import`` and ``build``: every fault is made for real.

Link loops, dangling links, unreadable folders and files, named pipes, colliding ids,
control characters, archive members that are links, devices, absolute or '..' paths,
or far too large, names that are paths, imports and builds over another dataset, and
builds made with stand-ins or overrides. Each one must end as a row or as a listed
reject with its reason (or as one clear line), never as a silent drop or a traceback.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from helpers import run_cli

from afpbench.dataset import open_dataset, verify
from afpbench.errors import AfpbenchError, DatasetError
from afpbench.importer import HEAD_BYTES, ImportConfig, import_set, max_file_bytes

ROOT_BYPASSES_PERMISSIONS = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _png(photos, i: int, size: int = 40) -> bytes:
    buf = io.BytesIO()
    photos[i % len(photos)][1].resize((size + i, size)).save(buf, format="PNG")
    return buf.getvalue()


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _rejects(path: Path) -> dict[str, str]:
    return {r["input"]: r["reason"] for r in _manifest(path)["rejects"]}


def _summary_counts(line: str) -> tuple[int, int, int, int]:
    """(seen, imported, rejected, not examined) as the CLI's summary line states them."""
    seen = int(re.search(r"(\d+) files seen", line).group(1))
    imported = int(re.search(r"imported (\d+) images", line).group(1))
    rejected = int(re.search(r"rejected (\d+)", line).group(1))
    m = re.search(r"not examined (\d+)", line)
    return seen, imported, rejected, int(m.group(1)) if m else 0


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The real CLI, in this process (a fresh one costs seconds of imports per call).

    A user error comes back as the CLI's exit code 2 and its one ``error:`` line.
    """
    from click.testing import CliRunner

    from afpbench.cli import cli

    res = CliRunner().invoke(cli, list(args), prog_name="afpbench")
    if isinstance(res.exception, AfpbenchError):  # main() prints these as one line and exits 2
        return subprocess.CompletedProcess(args, 2, res.stdout, f"error: {res.exception}\n")
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, "")


# -- folders ---------------------------------------------------------------------------
@pytest.fixture
def hostile_folder(tmp_path, photos):
    """A folder with good images and every kind of entry a walk can trip on."""
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (src / "a.jpg").write_bytes(_jpeg(photos, 0))
    (src / "a.png").write_bytes(_png(photos, 1))            # same stem as a.jpg: must be its own row
    (src / "nested" / "deep.png").write_bytes(_png(photos, 2))
    (outside / "far.png").write_bytes(_png(photos, 3))
    os.symlink(outside / "far.png", src / "linked_file.png")  # a link to a file outside: followed, a row
    os.symlink(src / "self_loop", src / "self_loop")          # a link to itself
    os.symlink(src, src / "nested" / "back_to_top")           # a folder link back to an enclosing folder
    os.symlink(src / "nowhere.png", src / "dangling.png")     # a link whose target is missing
    os.symlink(src / "nested", src / "alias_of_nested")       # a link to a folder inside the input
    os.mkfifo(src / "pipe.png")                               # reading it would block forever
    (src / "ctrl\x1b[31m\nname.png").write_bytes(_png(photos, 4))  # an escape sequence and a newline
    return src


def _jpeg(photos, i: int) -> bytes:
    buf = io.BytesIO()
    photos[i % len(photos)][1].resize((48, 40)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_folder_faults_are_rows_or_rejects_with_reasons(hostile_folder, tmp_path):
    res = _cli("import", "hostile", "--label", "fake", "--from", str(hostile_folder), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    ds = tmp_path / "out" / "hostile"
    assert verify(ds).ok
    ids = set(open_dataset(ds).ids())
    assert {"hostile/a.jpg", "hostile/a.png", "hostile/nested/deep.png", "hostile/linked_file.png"} <= ids
    # The control characters are percent-encoded in the id, never kept raw.
    assert "hostile/ctrl%1B[31m%0Aname.png" in ids
    assert not any(ch in rid for rid in ids for ch in "\n\r\x1b\x00")
    rejects = _rejects(ds)
    assert rejects["self_loop"].startswith("symbolic link loop")
    assert rejects["nested/back_to_top"].startswith("symbolic link loop")
    assert rejects["dangling.png"].startswith("dangling symbolic link")
    assert rejects["alias_of_nested"].startswith("symbolic link to a folder inside the input")
    assert rejects["pipe.png"] == "not a regular file (named pipe)"
    # Every entry in exactly one category, and the summary line counts all of them.
    line = res.stdout.strip().splitlines()[-1]
    seen, imported, rejected, skipped = _summary_counts(line)
    assert (seen, imported, rejected, skipped) == (10, 5, 5, 0)
    assert "1 dangling symbolic link" in line and "2 symbolic link loop" in line and "1 not a regular file" in line


def _in_unprivileged_child(fn, result: Path) -> str:
    """Run ``fn`` in a forked child that has become 'nobody', for whom chmod 000 really
    means unreadable (root reads anything). Returns what ``fn`` returned, as text.

    Forked, not exec'd: the interpreter may live where 'nobody' cannot enter, so every
    module the import needs is loaded by the parent before the fork (see the warm-up).
    """
    import traceback

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result.write_text(str(fn()))
            code = 0
        except BaseException:
            result.write_text(traceback.format_exc())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    text = result.read_text()
    assert os.waitstatus_to_exitcode(status) == 0, text
    return text


@pytest.fixture
def world_tmp():
    # pytest's tmp_path lives in a 0700 folder of the user running the tests: another user
    # cannot enter it, so the unprivileged run gets a folder of its own.
    path = Path(tempfile.mkdtemp(prefix="afpbench-perm-"))
    path.chmod(0o777)
    yield path
    for p in [path, *path.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o777)
    shutil.rmtree(path, ignore_errors=True)


def test_unreadable_folder_and_file_are_listed_rejects(world_tmp, photos):
    src = world_tmp / "src"
    (src / "locked").mkdir(parents=True)
    (src / "ok.png").write_bytes(_png(photos, 0))
    (src / "locked" / "hidden_from_us.png").write_bytes(_png(photos, 1))
    (src / "sealed.png").write_bytes(_png(photos, 2))
    src.chmod(0o777)
    (src / "ok.png").chmod(0o644)
    (src / "locked").chmod(0o000)
    (src / "sealed.png").chmod(0o000)
    out = world_tmp / "out"
    cfg = ImportConfig(name="perm", source=src, out=out, label="real")
    if ROOT_BYPASSES_PERMISSIONS:
        # Warm up: the same import path on a readable folder loads every module it uses.
        import_set(ImportConfig(name="warm", source=_folder(world_tmp / "warm-src", photos, [3]),
                                out=world_tmp / "warm", label="real"))
        probe = _in_unprivileged_child(lambda: os.access(src / "locked", os.R_OK), world_tmp / "probe.txt")
        if probe != "False":
            pytest.skip("cannot make a folder unreadable here (running as root, and 'nobody' can read it too)")
        line = _in_unprivileged_child(lambda: import_set(cfg).line(), world_tmp / "result.txt")
        listing = _in_unprivileged_child(lambda: _listing_error(src), world_tmp / "listing.txt")
    else:
        if os.access(src / "locked", os.R_OK):
            pytest.skip("chmod 000 does not make a folder unreadable on this file system")
        line = import_set(cfg).line()
        listing = _listing_error(src)
    # A build's image folder with an unreadable sub-folder stops with one line instead.
    assert listing.startswith(f"Cannot read the folder {src / 'locked'} (Permission denied)")
    rejects = _rejects(out / "perm")
    assert rejects["locked"].startswith("unreadable folder (Permission denied")
    assert rejects["sealed.png"] == "unreadable file (Permission denied)"
    assert open_dataset(out / "perm").ids() == ["perm/ok.png"]
    assert _summary_counts(line)[:3] == (3, 1, 2)


def _listing_error(src: Path) -> str:
    from afpbench.sources.images import list_images

    try:
        list_images(str(src))
    except AfpbenchError as exc:
        return str(exc)
    return "listed without error"


def test_colliding_ids_in_a_hf_dataset_are_two_rows(tmp_path, photos):
    import datasets

    # Two different images stored under one file name (they came from two folders).
    cells = [{"bytes": _png(photos, 0), "path": "img.png"}, {"bytes": _png(photos, 5), "path": "img.png"}]
    ds = datasets.Dataset.from_dict({"image": cells}, features=datasets.Features({"image": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "hf"))
    s = import_set(ImportConfig(name="hfdup", source=tmp_path / "hf", out=tmp_path / "out", label="fake"))
    assert (s.imported, s.rejected) == (2, 0)
    assert open_dataset(s.path).ids() == ["hfdup/img.png", "hfdup/img.png#2"]


def test_count_sample_accounts_for_every_file(tmp_path, photos):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"{i}.png").write_bytes(_png(photos, i))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    s = import_set(ImportConfig(name="sampled", source=src, out=tmp_path / "out", label="real", count=3, seed=1))
    assert s.imported == 3 and s.seen == 9 and s.not_examined > 0
    assert s.imported + s.rejected + s.not_examined == s.seen
    assert f"not examined {s.not_examined} (--count 3 reached)" in s.line()


# -- archives --------------------------------------------------------------------------
def _zeros_member(size: int) -> io.RawIOBase:
    class Zeros(io.RawIOBase):
        def __init__(self):
            self.left = size

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    return io.BufferedReader(Zeros(), 1 << 20)


CAP = max_file_bytes(1_000_000)   # --max-megapixels 1
OVER = CAP + 3 * 1024 * 1024       # declared larger than the cap: never read
SNIFFED = 12 * 1024 * 1024         # under the cap, zeros: rejected from its first bytes


def _write_tar(path: Path, photos, mode: str) -> None:
    with tarfile.open(path, mode) as tf:
        def add(name: str, data: bytes | None = None, **kw):
            info = tarfile.TarInfo(name)
            for k, v in kw.items():
                setattr(info, k, v)
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)

        add("set/good.png", _png(photos, 0))
        add("set/good2.jpg", _jpeg(photos, 1))
        add("set/../../evil.png", _png(photos, 2))
        add("/abs.png", _png(photos, 3))
        add("set/link.png", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add("set/hard.png", type=tarfile.LNKTYPE, linkname="set/good.png")
        add("set/dev.png", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        info = tarfile.TarInfo("set/huge.png")
        info.size = OVER
        tf.addfile(info, _zeros_member(OVER))
        info = tarfile.TarInfo("set/zeros.png")
        info.size = SNIFFED
        tf.addfile(info, _zeros_member(SNIFFED))


def _write_zip(path: Path, photos) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("set/good.png", _png(photos, 0))
        zf.writestr("set/good2.jpg", _jpeg(photos, 1))
        zf.writestr(zipfile.ZipInfo("set/../../evil.png"), _png(photos, 2))
        zf.writestr(zipfile.ZipInfo("/abs.png"), _png(photos, 3))
        link = zipfile.ZipInfo("set/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16  # how Info-ZIP stores a symlink
        zf.writestr(link, "/etc/passwd")
        for name, size in (("set/huge.png", OVER), ("set/zeros.png", SNIFFED)):
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                shutil.copyfileobj(_zeros_member(size), fh, 1 << 20)


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_unsafe_and_oversized_members_are_rejects_never_read(tmp_path, photos, kind):
    arc = tmp_path / f"in.{kind}"
    if kind == "zip":
        _write_zip(arc, photos)
    else:
        _write_tar(arc, photos, "w:gz" if kind == "tar.gz" else "w")
    out = tmp_path / "out"
    from PIL import Image

    Image.init()  # load every image plugin first: their code is not what is measured
    tracemalloc.start()
    try:
        s = import_set(ImportConfig(name="arc", source=arc, out=out, label="fake", max_pixels=1_000_000, workers=1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Neither zero-filled member was read whole: the larger one not at all (declared size),
    # the smaller one only for its first megabyte (no image format starts with zeros).
    assert peak < SNIFFED // 2, f"peak Python memory {peak / 1e6:.1f} MB: a zero member was read whole"
    assert sorted(open_dataset(s.path).ids()) == ["arc/set/good.png", "arc/set/good2.jpg"]
    rejects = _rejects(s.path)
    assert rejects["set/../../evil.png"] == "unsafe path in archive (contains '..')"
    assert rejects["/abs.png"] == "unsafe path in archive (absolute path)"
    assert rejects["set/link.png"].startswith("link in archive (symbolic link")
    assert rejects["set/huge.png"].startswith("too large (")
    assert rejects["set/zeros.png"].startswith("not an image")
    if kind != "zip":
        assert rejects["set/hard.png"] == "link in archive (hard link to set/good.png)"
        assert rejects["set/dev.png"] == "special file in archive (device)"
    assert s.imported + s.rejected == s.seen
    # Nothing was written outside --out, and no member was unpacked under its own path.
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()
    assert not (out / ".afpbench-partial").exists()


def test_head_of_a_large_file_decides_before_the_rest_is_read(tmp_path, photos):
    from afpbench.importer import InputFile, read_checked

    asked: list[int] = []
    zeros = bytes(SNIFFED)

    def read(n: int) -> bytes:
        asked.append(n)
        return zeros[:n]

    chk = read_checked(InputFile("z.png", read, size=SNIFFED), 1_000_000, CAP)
    assert not chk.ok and chk.reason.startswith("not an image") and asked == [HEAD_BYTES]
    # A real image of that size is read whole (its head is recognised).
    big = io.BytesIO()
    photos[0][1].save(big, format="BMP")
    raw = big.getvalue() + bytes(SNIFFED)
    asked.clear()

    def read_bmp(n: int) -> bytes:
        asked.append(n)
        return raw[:n]

    chk = read_checked(InputFile("b.bmp", read_bmp, size=len(raw)), 64_000_000, max_file_bytes(64_000_000))
    assert chk.ok and asked == [HEAD_BYTES, len(raw) + 1]


def test_damaged_archives_are_reported_not_raised(tmp_path, photos):
    arc = tmp_path / "cut.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for i in range(6):
            data = _png(photos, i, size=120)
            info = tarfile.TarInfo(f"img{i}.png")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    arc.write_bytes(arc.read_bytes()[: int(arc.stat().st_size * 0.7)])
    s = import_set(ImportConfig(name="cut", source=arc, out=tmp_path / "out", label="fake"))
    assert s.imported >= 1
    assert _rejects(s.path)["<rest of the archive>"].startswith("damaged archive")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    line = _one_error_line(_cli("import", "bad", "--label", "fake", "--from", str(bad), "--out", str(tmp_path / "o2")))
    assert "zip" in line


def test_authors_archive_counts_unmatched_and_rejects_links_per_set(tmp_path, photos):
    arc = tmp_path / "authors.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for name, data in (("test/1_fake/SD2/a.png", _png(photos, 0)), ("test/1_fake/SD2/b.png", _png(photos, 1)),
                           ("test/0_real/COCO/c.png", _png(photos, 2)), ("test/misc/readme.txt", b"hello"),
                           ("test/stray.png", _png(photos, 3))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("test/1_fake/SD2/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
        tf.addfile(link)
    out = tmp_path / "out"
    res = _cli("import", "--from", str(arc), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert _rejects(out / "sd2")["link.png"].startswith("link in archive")
    assert open_dataset(out / "sd2").num_rows == 2 and open_dataset(out / "coco").num_rows == 1
    listed = json.loads((out / "import-unmatched.json").read_text())["unmatched"]
    assert {u["input"] for u in listed} == {"test/misc/readme.txt", "test/stray.png"}
    assert f"unmatched: 2 files belong to no set (2 outside every set folder); listed in {out / 'import-unmatched.json'}" in res.stdout
    # Every file of the archive appears in exactly one place.
    total = sum(_summary_counts(line)[0] for line in res.stdout.splitlines() if "files seen" in line) + len(listed)
    assert total == 6


# -- names -----------------------------------------------------------------------------
def test_names_that_are_paths_are_refused(tmp_path, photos):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(_png(photos, 0))
    out = tmp_path / "deep" / "out"
    # The installed entry point, in a process of its own: exit 2, one line, nothing written.
    line = _one_error_line(run_cli("import", "../x", "--label", "fake", "--from", str(src), "--out", str(out)))
    assert "not a plain folder name" in line
    for name in ("a/b", "..", ".hidden", "x\n", "x\x1b[2J", "/abs", "x" * 101, "sd2\\..\\x"):
        line = _one_error_line(_cli("import", name, "--label", "fake", "--from", str(src), "--out", str(out)))
        assert "not a plain folder name" in line and "\x1b" not in line
    assert not out.exists() and not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()


def test_build_name_that_is_a_path_is_refused(tmp_path):
    res = _cli("build", "photos", "--count", "2", "--name", "sub/../../x", "--out", str(tmp_path / "out"))
    assert "not a plain folder name" in _one_error_line(res)
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()


def test_writer_refuses_a_name_that_is_a_path(tmp_path):
    from afpbench.dataset import DatasetWriter

    with pytest.raises(DatasetError, match="plain folder name"):
        DatasetWriter(tmp_path, "../escape")


# -- replacing an existing dataset ------------------------------------------------------
def _folder(root: Path, photos, idx: list[int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in idx:
        (root / f"p{i}.png").write_bytes(_png(photos, i))
    return root


def test_import_over_a_different_dataset_needs_overwrite(tmp_path, photos):
    out = tmp_path / "out"
    first = _folder(tmp_path / "one", photos, [0, 1, 2])
    second = _folder(tmp_path / "two", photos, [3, 4])
    a = import_set(ImportConfig(name="mine", source=first, out=out, label="real"))
    fp = _manifest(a.path)["fingerprint"]
    line = _one_error_line(_cli("import", "mine", "--label", "real", "--from", str(second), "--out", str(out)))
    assert "--overwrite" in line and "already holds the dataset 'mine'" in line
    assert verify(a.path).ok and _manifest(a.path)["fingerprint"] == fp
    # The same import again is allowed: the content is the same.
    again = import_set(ImportConfig(name="mine", source=first, out=out, label="real"))
    assert _manifest(again.path)["fingerprint"] == fp
    # The same command after the source changed would replace different content: refused
    # at the end, with the finished rows kept so that --overwrite finishes at once.
    (first / "p9.png").write_bytes(_png(photos, 9))
    with pytest.raises(DatasetError, match="different dataset.*--overwrite"):
        import_set(ImportConfig(name="mine", source=first, out=out, label="real"))
    assert _manifest(a.path)["fingerprint"] == fp and (out / ".afpbench-partial" / "mine" / "parts").is_dir()
    s = import_set(ImportConfig(name="mine", source=first, out=out, label="real", overwrite=True))
    assert s.imported == 4 and _manifest(s.path)["fingerprint"] != fp
    res = _cli("import", "mine", "--label", "real", "--from", str(second), "--out", str(out), "--overwrite")
    assert res.returncode == 0, res.stderr
    assert open_dataset(out / "mine").num_rows == 2


def test_import_never_replaces_a_folder_that_is_not_a_dataset(tmp_path, photos):
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "thesis.tex").write_text("years of work\n")
    src = _folder(tmp_path / "src", photos, [0, 1])
    line = _one_error_line(_cli("import", "notes", "--label", "fake", "--from", str(src), "--out", str(out)))
    assert "not an afpbench dataset" in line and "--overwrite" in line
    assert (out / "notes" / "thesis.tex").read_text() == "years of work\n"


def test_build_over_a_different_dataset_needs_overwrite_and_same_build_is_kept(tmp_path, photos):
    from afpbench.build import build
    from afpbench.plan import BuildConfig

    out = tmp_path / "out"
    path = build("photos", BuildConfig(out=out, count=3, quiet=True))
    fp = _manifest(path)["fingerprint"]
    line = _one_error_line(_cli("build", "photos", "--count", "4", "--out", str(out), "--quiet"))
    assert "--overwrite" in line
    assert _manifest(path)["fingerprint"] == fp
    # A damaged copy of the same build is rebuilt without the flag.
    shard = path / _manifest(path)["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes()[:-50])
    assert build("photos", BuildConfig(out=out, count=3, quiet=True)) == path and verify(path).ok
    assert _manifest(path)["fingerprint"] == fp
    res = _cli("build", "photos", "--count", "4", "--out", str(out), "--quiet", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert open_dataset(path).num_rows == 4
    # An import is another dataset too (refused before its input is read).
    with pytest.raises(AfpbenchError, match="--overwrite"):
        import_set(ImportConfig(name="photos", source=tmp_path / "no-need-to-exist", out=out))


# -- provenance ------------------------------------------------------------------------
def test_standin_build_says_so_and_lists_overrides(tmp_path, sd):
    from afpbench.build import build
    from afpbench.card import parse_front_matter, validate_card
    from afpbench.catalog import get_generator, get_recipe
    from afpbench.plan import BuildConfig

    captions = tmp_path / "caps.txt"
    captions.write_text("A red bicycle leaning on a wall.\nA bowl of soup on a table.\n")
    cfg = BuildConfig(out=tmp_path / "out", count=2, model=str(sd), source=str(captions), quiet=True, batch_size=2,
                      params={"height": 32, "width": 32, "num_inference_steps": 2})
    path = build("sd2", cfg)
    m = _manifest(path)
    recipe, card = get_recipe("sd2"), get_generator("sd2-1")
    assert m["standin"]["kind"] == "sd" and m["generator"]["standin"]["kind"] == "sd"
    assert m["overrides"]["model"] == {"recipe": card.model_id, "used": str(sd)}
    assert m["overrides"]["source"]["used"]["mix"] == {"text": 2}
    assert m["overrides"]["source"]["recipe"]["mix"] == {"coco": 1500, "flickr": 1500}
    # The recipe's claim is kept as the recipe's, never as this set's description.
    assert m["recipe"]["description"] == recipe.description
    assert m["description"].startswith("Stand-in build") and not m["description"].startswith(recipe.description)
    text = (path / "README.md").read_text()
    assert validate_card(text) == []
    assert "stand-in" in parse_front_matter(text)["pretty_name"] and "stand-in" in parse_front_matter(text)["tags"]
    body = text.split("\n---\n", 1)[1]
    first_paragraph = body.strip().split("\n\n")[1]
    assert first_paragraph.startswith("> **Stand-in build.**") and "`sd`" in first_paragraph
    assert "## What differs from the recipe" in body and card.model_id in body and str(sd) in body
    assert all("stand-in" in g for g in open_dataset(path).column("generator"))


def test_source_override_without_standin_and_plain_build(tmp_path):
    from afpbench.build import build
    from afpbench.catalog import get_recipe
    from afpbench.plan import BuildConfig

    over = _manifest(build("flickr", BuildConfig(out=tmp_path / "a", count=2, source="photos", quiet=True)))
    assert "standin" not in over and "model" not in over.get("overrides", {})
    assert over["overrides"]["source"]["used"].startswith("photos")
    assert over["overrides"]["source"]["recipe"]["mix"] == {"flickr": 3000}
    assert "instead of the recipe's" in over["description"]
    plain = build("photos", BuildConfig(out=tmp_path / "b", count=2, quiet=True))
    m = _manifest(plain)
    assert "overrides" not in m and "standin" not in m and m["description"] == get_recipe("photos").description
    assert "What differs from the recipe" not in (plain / "README.md").read_text()


def test_import_into_a_catalog_name_says_it_was_imported(tmp_path, photos):
    from afpbench.card import validate_card
    from afpbench.catalog import get_recipe

    src = _folder(tmp_path / "src", photos, [0, 1])
    s = import_set(ImportConfig(name="sd2", source=src, out=tmp_path / "out"))
    m = _manifest(s.path)
    assert m["description"].startswith("Images imported from src") and m["acquisition"] == "import"
    assert m["recipe"]["description"] == get_recipe("sd2").description
    card = (s.path / "README.md").read_text()
    assert "imported from" in card and validate_card(card) == []


# -- real size (slow) --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_400mb_zero_member_costs_no_memory(tmp_path, photos, kind):
    size = 400 * 1024 * 1024
    arc = tmp_path / f"big.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(arc, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.writestr("good.png", _png(photos, 0))
            with zf.open(zipfile.ZipInfo("zeros.png"), "w", force_zip64=True) as fh:
                shutil.copyfileobj(_zeros_member(size), fh, 1 << 20)
    else:
        with tarfile.open(arc, "w:gz", compresslevel=1) as tf:
            data = _png(photos, 0)
            info = tarfile.TarInfo("good.png")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo("zeros.png")
            info.size = size
            tf.addfile(info, _zeros_member(size))
    code = (
        "import resource, sys; from pathlib import Path; from afpbench.importer import ImportConfig, import_set; "
        f"s = import_set(ImportConfig(name='big', source=Path({str(arc)!r}), out=Path({str(tmp_path / 'out')!r}), label='fake')); "
        "print(s.imported, s.rejected, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    imported, rejected, peak_mb = map(int, res.stdout.split())
    assert (imported, rejected) == (1, 1)
    assert peak_mb < 300, f"peak RSS {peak_mb} MB"  # ~160 MB measured; the member alone would be 400


# -- build sources: image folders ---------------------------------------------------------
def test_image_folder_listing_stops_on_what_it_cannot_list(tmp_path, photos):
    from afpbench.sources.images import list_images

    def fresh(name: str) -> Path:
        root = tmp_path / name
        (root / "sub").mkdir(parents=True)
        (root / "a.png").write_bytes(_png(photos, 0))
        (root / "sub" / "b.png").write_bytes(_png(photos, 1))
        return root

    ok = fresh("ok")
    assert list_images(str(ok)) == ("a.png", "sub/b.png")
    loop = fresh("loop")
    os.symlink(loop, loop / "sub" / "up")
    with pytest.raises(AfpbenchError, match="symbolic link loop"):
        list_images(str(loop))
    dangling = fresh("dangling")
    os.symlink(dangling / "gone.png", dangling / "c.png")
    with pytest.raises(AfpbenchError, match="dangling symbolic link"):
        list_images(str(dangling))


def test_image_keys_are_unique_and_keep_short_keys(tmp_path):
    from afpbench.sources.images import image_keys

    rels = ["COCO_train2014_000000000009.jpg", "COCO_val2014_000000000009.jpg", "a.jpg", "a.png", "s1/b.jpg", "s2/b.jpg",
            "x.jpg", "x~1.jpg", "solo.png", "bell\x07.png"]
    keys = image_keys(rels)
    assert len(set(keys)) == len(keys)
    # Colliding short keys fall back to the whole path; the rest keep their short key.
    assert keys[:6] == rels[:6]
    assert keys[6:] == ["x", "x~1.jpg", "solo", "bell%07"]
