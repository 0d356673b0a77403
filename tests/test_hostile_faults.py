"""Faults and concurrency, made for real: SIGTERM, SIGKILL, two writers, a full or
read-only disk, ``--out`` naming a file, unreadable inputs.

Each case runs the real command in a subprocess where the fault must reach a real
process (signals, locks, file-size limits, dropped privileges), then checks what a user
would: the exit code, one line on stderr, the previous output byte for byte, no
temporary files left, and that running the command again finishes the job with the
same result as an uninterrupted run.

Long runs are made by a slowed-down detector (``slowrandom``: the ``random`` baseline
that sleeps per batch and can pause after N batches until it is stopped) and by
wrappers that slow the importer's and the sample backend's work: the signal then lands
at a known point, so the amount of kept work is known exactly.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import REPO
from PIL import Image

from afpbench._util.locking import OutputBusyError, OutputLock, hold, lock_path, lock_scope
from afpbench.cli import TERMINATED_EXIT_CODE, _os_error_message, main
from afpbench.dataset import open_dataset, verify
from afpbench.evaluate import EvalConfig, evaluate
from afpbench.results import load_results, read_predictions
from afpbench.testing import write_images

SETS = ("reals", "fakes")
N_ROWS = 40
BATCH = 4

SLOW_DETECTOR = '''
import os
import time

from afpbench.detectors.random_ import RandomDetector


class SlowRandom(RandomDetector):
    """``random`` (same scores), slowed: logs each batch, sleeps, may pause until stopped."""

    name = "slowrandom"

    def forward_scores(self, batch):
        log = os.environ.get("AFPBENCH_TEST_LOG")
        if log:
            done = len(open(log).read().split()) if os.path.exists(log) else 0
            pause = int(os.environ.get("AFPBENCH_TEST_PAUSE_AFTER", "-1"))
            while done == pause:  # a long run: wait here until the test stops the process
                time.sleep(0.05)
            with open(log, "a") as fh:
                fh.write(f"{len(batch)}\\n")
        time.sleep(float(os.environ.get("AFPBENCH_TEST_SLEEP", "0")))
        return super().forward_scores(batch)
'''


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """``slowrandom`` installed as an entry-point plugin (for subprocesses) and importable here."""
    site = tmp_path_factory.mktemp("site")
    (site / "afpbench_slow.py").write_text(SLOW_DETECTOR)
    dist = site / "afpbench_slow-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: afpbench-slow\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[afpbench.detectors]\nslowrandom = afpbench_slow:SlowRandom\n")
    sys.path.insert(0, str(site))
    import afpbench_slow

    from afpbench.registry import DETECTORS

    # This process may have read the entry points already: register the plugin here too,
    # so in-process `main([...])` calls find it by name as the subprocesses do.
    DETECTORS.register_lazy("slowrandom", "afpbench_slow:SlowRandom")
    yield site, afpbench_slow.SlowRandom
    DETECTORS._lazy.pop("slowrandom", None)
    DETECTORS._objects.pop("slowrandom", None)
    sys.path.remove(str(site))


def _crops(photos, n: int, offset: int, size: int = 32) -> list[Image.Image]:
    out = []
    for i in range(n):
        _, img = photos[(offset + i) % len(photos)]
        w, h = img.size
        s = min(w, h) // 3
        left, top = (i * 41) % (w - s), (i * 29) % (h - s)
        out.append(img.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("data")
    write_images(root, "reals", _crops(photos, 20, 0), 0)
    write_images(root, "fakes", _crops(photos, 20, 3), 1)
    return root


@pytest.fixture(scope="module")
def source_folder(tmp_path_factory, photos):
    """24 distinct images to import."""
    root = tmp_path_factory.mktemp("src") / "images"
    root.mkdir()
    for i, img in enumerate(_crops(photos, 24, 1, size=40)):
        img.save(root / f"img{i:02d}.png")
    return root


# -- helpers --------------------------------------------------------------------------------
def _env(site: Path | None = None, **extra: str) -> dict[str, str]:
    paths = [str(site)] if site else []
    paths += [str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **extra}


def _afpbench(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "afpbench", *args], capture_output=True, text=True, env=env, timeout=300, **kw)


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    # A session of its own: the test can signal the whole group, as `timeout` does.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended before {what}: rc {proc.returncode}\n{proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def _batches(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


def _cached_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in folder.glob("cache/*/part-*.parquet"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


LEFTOVER = re.compile(r"\.tmp|\.new-|\.old-|\.afpbench\.lock$")


def _leftovers(folder: Path) -> list[str]:
    """Temporary files and folders, and locks, below ``folder`` (none may survive a command)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if LEFTOVER.search(p.name))


def _scores(folder: Path) -> dict[str, tuple[list, list, list, list]]:
    out = {}
    for p in sorted((folder / "predictions").glob("*.parquet")):
        pr = read_predictions(p)
        out[p.stem] = (pr.ids, pr.labels.tolist(), pr.scores.tolist(), pr.preds.tolist())
    return out


def _main(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the real entry point in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _eval_args(data: Path, out: Path, detector: str = "slowrandom", *more: str) -> list[str]:
    return ["evaluate", "--detector", detector, "--data", str(data), "--datasets", ",".join(SETS), "--out", str(out),
            "--batch-size", str(BATCH), "--bootstrap", "50", "--no-progress", *more]


def _eval_cfg(data: Path, out: Path, detector, **kw) -> EvalConfig:
    return EvalConfig(detectors=[detector], data=[data], datasets=list(SETS), out=out, batch_size=BATCH, bootstrap=50,
                      num_workers=0, progress=False, **kw)


# -- SIGTERM, locks and resume: evaluate ----------------------------------------------------------
def test_evaluate_sigterm_keeps_scores_refuses_a_second_writer_and_resumes(plugin, data, tmp_path, capsys, monkeypatch):
    site, SlowRandom = plugin
    out, log = tmp_path / "res", tmp_path / "batches.log"
    # Scores are cached only every 1000 s or 256 rows: what survives comes from the
    # SIGTERM path alone. One DataLoader worker, so the signal also reaches a worker.
    env = _env(site, AFPBENCH_TEST_LOG=str(log), AFPBENCH_TEST_PAUSE_AFTER="3", AFPBENCH_FLUSH_SECONDS="1000")
    proc = _start([sys.executable, "-m", "afpbench", *_eval_args(data, out, "slowrandom", "--num-workers", "1")], env)
    try:
        _wait_until(lambda: len(_batches(log)) == 3, proc, "three batches were scored")
        lock = lock_path(out, "slowrandom")
        assert lock.is_file() and int(lock.read_text()) == proc.pid

        # A second evaluation of the same detector into the same --out: refused at once.
        code, _, err = _main(_eval_args(data, out), capsys)
        assert code == 2
        assert f"another afpbench (pid {proc.pid}) is writing here: {out / 'slowrandom'}" in _one_error_line(err)
        # Another detector into the same --out is not held up (one lock per results folder).
        assert _main(_eval_args(data, out, "random"), capsys)[0] == 0
        assert load_results(out / "random").run.rows_scored == N_ROWS

        os.killpg(proc.pid, signal.SIGTERM)  # the whole process group, as `timeout` sends it
        assert proc.wait(60) == TERMINATED_EXIT_CODE == 143
        line = _one_error_line(proc.stderr.read())
        assert "SIGTERM" in line and "run the same command again to resume" in line
    finally:
        _stop(proc)
    kept = sum(_batches(log))  # the first batches ramp up in size with a worker: 1, 2, 4
    assert kept >= 3 and _cached_rows(out / "slowrandom") == kept  # every scored batch was flushed
    assert not (out / "slowrandom" / "results.json").exists()
    assert _leftovers(out) == []  # the lock went with the process; no temporary file

    log.unlink()
    monkeypatch.setenv("AFPBENCH_TEST_LOG", str(log))
    assert _main(_eval_args(data, out), capsys)[0] == 0
    assert sum(_batches(log)) == N_ROWS - kept  # only the rows the first run had not scored
    res = load_results(out / "slowrandom")
    assert res.run.rows_cached == kept and res.run.rows_scored == N_ROWS - kept
    ref = tmp_path / "ref"
    evaluate(_eval_cfg(data, ref, SlowRandom()))
    assert _scores(out / "slowrandom") == _scores(ref / "slowrandom")
    assert res.metrics == load_results(ref / "slowrandom").metrics
    assert not (out / "slowrandom" / "cache").exists() and _leftovers(out) == []
    # `random` gives the same scores: the run that went alongside matches too.
    assert [v[2] for v in _scores(out / "random").values()] == [v[2] for v in _scores(ref / "slowrandom").values()]


def test_cache_is_flushed_by_time_so_a_killed_run_keeps_its_scores(plugin, data, tmp_path, capsys, monkeypatch):
    site, SlowRandom = plugin
    out, log = tmp_path / "res", tmp_path / "batches.log"
    # 40 rows never reach the 256-row flush: only the time-based flush (every batch here) writes parts.
    env = _env(site, AFPBENCH_TEST_LOG=str(log), AFPBENCH_TEST_PAUSE_AFTER="3", AFPBENCH_FLUSH_SECONDS="0")
    proc = _start([sys.executable, "-m", "afpbench", *_eval_args(data, out, "slowrandom", "--num-workers", "0")], env)
    try:
        _wait_until(lambda: _cached_rows(out / "slowrandom") == 3 * BATCH, proc, "three batches were cached")
        os.killpg(proc.pid, signal.SIGKILL)  # no handler, no flush: only parts already written survive
        proc.wait(30)
    finally:
        _stop(proc)
    assert _cached_rows(out / "slowrandom") == 3 * BATCH
    assert lock_path(out, "slowrandom").is_file()  # left by the killed run: it must not block

    log.unlink()
    monkeypatch.setenv("AFPBENCH_TEST_LOG", str(log))
    assert _main(_eval_args(data, out), capsys)[0] == 0  # the stale lock file does not block
    assert sum(_batches(log)) == N_ROWS - 3 * BATCH
    evaluate(_eval_cfg(data, tmp_path / "ref", SlowRandom()))
    assert _scores(out / "slowrandom") == _scores(tmp_path / "ref" / "slowrandom")
    assert _leftovers(out) == []


# -- SIGTERM, locks and resume: import and build -----------------------------------------------
_GATED = '''
import os, sys, time
import {module} as target

real = target.{owner}{attr}
gate, log, after = os.environ["GATE"], os.environ["GATE_LOG"], int(os.environ["GATE_AFTER"])


def slowed(*args, **kwargs):
    with open(log, "a") as fh:
        fh.write("x")
    if os.path.getsize(log) > after:
        while os.path.exists(gate):  # paused until the test opens the gate
            time.sleep(0.02)
    return real(*args, **kwargs)


{assign} = slowed
from afpbench.cli import main

main(sys.argv[1:])
'''


def _gated(tmp_path: Path, module: str, owner: str, attr: str) -> Path:
    """A launcher running the real CLI with ``module.owner.attr`` counted and paused after N calls."""
    script = tmp_path / "gated.py"
    dotted = f"target.{owner}{attr}"
    script.write_text(textwrap.dedent(_GATED.format(module=module, owner=owner, attr=attr, assign=dotted)))
    return script


def test_import_sigterm_lock_and_resume(source_folder, tmp_path, capsys):
    from afpbench.importer import ImportConfig, import_set

    out, gate, log = tmp_path / "out", tmp_path / "gate", tmp_path / "calls"
    gate.touch()
    script = _gated(tmp_path, "afpbench.importer", "", "check_image")
    args = ["import", "mine", "--from", str(source_folder), "--out", str(out), "--label", "fake", "--workers", "1", "--flush-rows", "4"]
    env = _env(GATE=str(gate), GATE_LOG=str(log), GATE_AFTER="10")
    proc = _start([sys.executable, str(script), *args], env)
    try:
        _wait_until(lambda: log.exists() and log.stat().st_size > 10, proc, "ten images were checked")
        second = _afpbench(args, _env())  # a real second process, from the command line
        assert second.returncode == 2
        assert f"another afpbench (pid {proc.pid}) is writing here: {out / 'mine'}" in _one_error_line(second.stderr)
        proc.send_signal(signal.SIGTERM)  # the main process only, as `docker stop` sends it
        time.sleep(0.3)
        gate.unlink()  # let the checking thread finish its image
        assert proc.wait(60) == 143
        assert "SIGTERM" in _one_error_line(proc.stderr.read())
    finally:
        _stop(proc)
    partial = open_dataset_parts(out / ".afpbench-partial" / "mine")
    assert partial == 10 and not (out / "mine").exists()  # the ten accepted rows were kept
    assert _leftovers(out) == []

    code, stdout, err = _main(args, capsys)
    assert code == 0, err
    assert "imported 24 images" in stdout
    ref = import_set(ImportConfig(name="mine", source=source_folder, out=tmp_path / "ref", label="fake"))
    assert ref.imported == 24
    assert _manifest(out / "mine")["fingerprint"] == _manifest(tmp_path / "ref" / "mine")["fingerprint"]
    assert verify(out / "mine").ok and _leftovers(out) == [] and not (out / ".afpbench-partial").exists()


def test_build_sigterm_lock_and_resume(tmp_path, capsys):
    from afpbench.build import build
    from afpbench.plan import BuildConfig

    out, gate, log = tmp_path / "out", tmp_path / "gate", tmp_path / "calls"
    gate.touch()
    script = _gated(tmp_path, "afpbench.generate.sample", "SampleBackend.", "run")
    args = ["build", "photos", "--out", str(out), "--count", "16", "--batch-size", "2", "--quiet"]
    # Rows are persisted every 1000 s: what survives comes from the SIGTERM path alone.
    env = _env(GATE=str(gate), GATE_LOG=str(log), GATE_AFTER="3", AFPBENCH_FLUSH_SECONDS="1000")
    proc = _start([sys.executable, str(script), *args], env)
    try:
        _wait_until(lambda: log.exists() and log.stat().st_size > 3, proc, "three batches were made")
        code, _, err = _main(args, capsys)
        assert code == 2
        assert f"another afpbench (pid {proc.pid}) is writing here: {out / 'photos'}" in _one_error_line(err)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143
        assert "SIGTERM" in _one_error_line(proc.stderr.read())
    finally:
        _stop(proc)
    assert open_dataset_parts(out / ".afpbench-partial" / "photos") == 3 * 2
    assert not (out / "photos").exists() and _leftovers(out) == []

    code, _, err = _main(args, capsys)
    assert code == 0, err
    ref = build("photos", BuildConfig(out=tmp_path / "ref", count=16, batch_size=2, quiet=True))
    assert _manifest(out / "photos")["fingerprint"] == _manifest(ref)["fingerprint"]
    assert _manifest(out / "photos")["num_rows"] == 16 and verify(out / "photos").ok
    assert _leftovers(out) == []


def open_dataset_parts(partial: Path) -> int:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    rows = 0
    for part in (partial / "parts").glob("part-*.arrow"):
        with pa.memory_map(str(part)) as src:
            rows += ipc.open_file(src).read_all().num_rows
    return rows


def _manifest(folder: Path) -> dict:
    import json

    return json.loads((folder / "manifest.json").read_text())


# -- the lock itself ------------------------------------------------------------------------------
def test_lock_names_its_holder_and_dies_with_it(tmp_path):
    path = lock_path(tmp_path, "thing")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; from afpbench._util.locking import OutputLock; OutputLock({str(path)!r}).acquire(); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError, match=rf"another afpbench \(pid {holder.pid}\) is writing here: {re.escape(str(tmp_path))}"):
            OutputLock(path, tmp_path).acquire()
        holder.kill()  # SIGKILL: no cleanup runs, the lock file stays
        holder.wait(30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert path.is_file()
    lock = OutputLock(path).acquire()  # the kernel released the dead holder's lock
    assert int(path.read_text()) == os.getpid()
    # Within one process too, a second taker is refused (flock locks per open file).
    with pytest.raises(OutputBusyError, match=rf"pid {os.getpid()}"):
        OutputLock(path).acquire()
    lock.release()
    assert not path.exists()

    @lock_scope
    def failing():
        hold(path, "x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing()
    OutputLock(path).acquire().release()  # the scope released it on the way out


# -- what a killed run leaves behind ------------------------------------------------------------
def test_leftovers_of_killed_runs_are_cleared_and_a_half_swapped_set_comes_back(photos, data, tmp_path, capsys):
    from afpbench.dataset import PARTIAL_DIR, recover_interrupted
    from afpbench.dataset.writer import _swap_in

    out = tmp_path / "out"
    write_images(out, "older", _crops(photos, 4, 2), 0)
    before = _snapshot(out / "older")
    # A rename that fails half-way through a swap puts the old folder back.
    with pytest.raises(FileNotFoundError):
        _swap_in(out / ".older.tmp-1", out / "older")
    assert _snapshot(out / "older") == before
    # Killed between the two renames of a swap (old folder moved aside, new one not yet in),
    # with a half-written new folder and a half-written part lying around.
    os.replace(out / "older", out / ".older.old-1")
    (out / ".older.tmp-1" / "data").mkdir(parents=True)
    (out / ".older.tmp-1" / "data" / "test-00000-of-00001.parquet").write_bytes(b"PAR1")
    (out / PARTIAL_DIR / "older" / "parts").mkdir(parents=True)
    (out / PARTIAL_DIR / "older" / "parts" / ".part-r000-000000.arrow.tmp-1").write_bytes(b"ARR")
    recover_interrupted(out, "older")
    assert _snapshot(out / "older") == before and verify(out / "older").ok
    assert _leftovers(out) == []

    # evaluate clears the temporaries of a killed run in its results folder.
    res = tmp_path / "res"
    evaluate(_eval_cfg(data, res, "random"))
    final, scores = _snapshot(res), _scores(res / "random")
    for junk in ("random/predictions/.reals.parquet.new-1", "random/.results.json.new-1", "random/cache/reals-0/.part-r000-x.parquet.tmp-1"):
        (res / junk).parent.mkdir(parents=True, exist_ok=True)
        (res / junk).write_bytes(b"half")
    evaluate(_eval_cfg(data, res, "random"))
    assert _leftovers(res) == [] and _scores(res / "random") == scores
    assert {k for k in _snapshot(res) if "/cache/" not in k} == set(final)

    # leaderboard clears the staging folder of a killed run.
    site = tmp_path / "site"
    (site / ".site.tmp-1").mkdir(parents=True)
    (site / ".site.tmp-1" / "accuracy_per_set.png").write_bytes(b"")
    assert _main(["leaderboard", str(res / "random"), "--out", str(site)], capsys)[0] == 0
    assert _leftovers(site) == [] and (site / "accuracy_per_set.png").stat().st_size > 0


# -- disk full -----------------------------------------------------------------------------------
class _Disk:
    """A small disk that can be filled up.

    ``tmpfs``: a real 8 MB tmpfs (needs root), filled with a file until ENOSPC.
    ``fsize``: a folder where filling means a per-process file-size limit (RLIMIT_FSIZE,
    EFBIG) for the commands run in subprocesses: files up to ``limit`` bytes are written,
    larger ones fail part-way, which lets a test place the failure after the small cache
    files and inside the final ones.
    """

    def __init__(self, kind: str, root: Path, limit: int):
        self.kind, self.path, self.limit, self.full = kind, root / "disk", limit, False
        self.path.mkdir()
        if kind == "tmpfs":
            if os.geteuid() != 0:
                pytest.skip("mounting a tmpfs needs root; the fsize variant covers this case")
            res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(self.path)], capture_output=True, text=True)
            if res.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); the fsize variant covers this case")

    def fill(self) -> None:
        self.full = True
        if self.kind == "tmpfs":
            with open(self.path / "filler", "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

    def free(self) -> None:
        self.full = False
        (self.path / "filler").unlink(missing_ok=True)

    def preexec(self):
        if self.kind != "fsize" or not self.full:
            return None
        limit = self.limit

        def apply() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return apply

    def error(self) -> str:
        return "no space left on device" if self.kind == "tmpfs" else "file too large"

    def close(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture(params=["tmpfs", "fsize"])
def disk_kind(request):
    return request.param


def _disk(kind: str, root: Path, limit: int, request) -> _Disk:
    d = _Disk(kind, root, limit)
    request.addfinalizer(d.close)
    return d


def test_disk_full_evaluate_keeps_the_previous_results(disk_kind, data, tmp_path, request):
    # fsize limit: cache parts (~1.3 KB) and predictions (~3 KB) fit, results.json (~5.5 KB)
    # does not: the failure lands in the final step, after the predictions were written.
    disk = _disk(disk_kind, tmp_path, 4000, request)
    out = disk.path / "res"
    evaluate(_eval_cfg(data, out, "random"))
    before, scores = _final_files(out), _scores(out / "random")
    assert "random/results.json" in before and "random/predictions/fakes.parquet" in before

    disk.fill()
    res = _afpbench(_eval_args(data, out, "random", "--no-resume", "--num-workers", "0"), _env(), preexec_fn=disk.preexec())
    assert res.returncode == 2
    line = _one_error_line(res.stderr)
    assert disk.error() in line.lower() and ("free some space" if disk.kind == "tmpfs" else "ulimit -f") in line
    assert _final_files(out) == before  # previous predictions and results untouched, nothing half-written
    assert _leftovers(out) == []

    disk.free()
    [path] = [e.path for e in evaluate(_eval_cfg(data, out, "random"))]
    assert _scores(out / "random") == scores and load_results(path).run.rows_scored + load_results(path).run.rows_cached == N_ROWS
    assert _leftovers(out) == []


def _final_files(out: Path) -> dict[str, bytes]:
    # The score cache is resumable work that a failed run may add to; everything else is output.
    return {k: v for k, v in _snapshot(out).items() if "/cache/" not in k}


def test_disk_full_import_keeps_other_sets_and_finishes_on_rerun(disk_kind, source_folder, photos, tmp_path, request):
    # fsize limit: one-row parts (--flush-rows 1) fit, the 24-row shard does not: the
    # failure lands in finalize, whose half-written folder must go.
    disk = _disk(disk_kind, tmp_path, 12000, request)
    out = disk.path / "out"
    write_images(out, "older", _crops(photos, 6, 2), 0)
    before = _snapshot(out)

    disk.fill()
    args = ["import", "mine", "--from", str(source_folder), "--out", str(out), "--label", "fake", "--flush-rows", "1"]
    res = _afpbench(args, _env(), preexec_fn=disk.preexec())
    assert res.returncode == 2
    assert disk.error() in _one_error_line(res.stderr).lower()
    assert {k: v for k, v in _snapshot(out).items() if not k.startswith(".afpbench-partial/")} == before
    assert verify(out / "older").ok and not (out / "mine").exists()
    assert _leftovers(out) == []

    disk.free()
    again = _afpbench(args, _env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert verify(out / "mine").ok and open_dataset(out / "mine").num_rows == 24
    assert _leftovers(out) == []


def test_disk_full_while_replacing_a_set_keeps_the_old_one(disk_kind, photos, tmp_path, request):
    # The disk fills up after the new rows were saved as parts, while the new folder is
    # written: the half-written folder goes, the old set stays, the parts stay for a rerun.
    disk = _disk(disk_kind, tmp_path, 12000, request)
    out = disk.path / "out"
    write_images(out, "older", _crops(photos, 6, 2), 0)
    before = _snapshot(out / "older")
    script = textwrap.dedent(f"""
        import errno, resource, signal, sys
        from afpbench.dataset import DatasetWriter, WriterOptions, encode_png, make_row
        from afpbench.sources.photos import photo_images
        w = DatasetWriter({str(out)!r}, "older", info={{"recipe": {{"name": "older", "version": 2}}}}, options=WriterOptions(flush_rows=1))
        for i, (_, img) in enumerate(photo_images()[:12]):
            img = img.resize((32, 32))
            w.add(make_row(id=f"older/{{i}}", image=encode_png(img), label=1, dataset="older", width=32, height=32, format="png"), index=i)
        w.flush()
        if {disk.kind!r} == "tmpfs":
            with open({str(disk.path / "filler")!r}, "wb") as fh:
                try:
                    while True:
                        fh.write(bytes(65536)); fh.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        else:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, ({disk.limit}, {disk.limit}))
        w.finalize()
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=300)
    errno_name = "ENOSPC" if disk.kind == "tmpfs" else "EFBIG"
    assert res.returncode != 0 and f"[Errno {getattr(errno, errno_name)}]" in res.stderr, res.stderr[-3000:]
    assert _snapshot(out / "older") == before and verify(out / "older").ok
    assert _leftovers(out) == []
    assert open_dataset_parts(out / ".afpbench-partial" / "older") == 12  # kept for the next run


def test_disk_full_leaderboard_keeps_the_previous_site(disk_kind, data, tmp_path, request):
    from afpbench.leaderboard import build_site

    [results] = [e.path for e in evaluate(_eval_cfg(data, tmp_path / "res", "random"))]
    # fsize limit: larger than the JSON, smaller than the plots.
    disk = _disk(disk_kind, tmp_path, 6000, request)
    site = disk.path / "site"
    build_site([results], site)
    before = _snapshot(site)
    assert before["accuracy_per_set.png"] and before["index.html"]

    disk.fill()
    res = _afpbench(["leaderboard", str(results), "--out", str(site)], _env(), preexec_fn=disk.preexec())
    assert res.returncode == 2
    assert disk.error() in _one_error_line(res.stderr).lower()
    assert _snapshot(site) == before  # no 0-byte PNG, no half page
    assert _leftovers(site) == []

    disk.free()
    build_site([results], site)
    assert all(len(v) > 0 for v in _snapshot(site).values()) and _leftovers(site) == []


# -- --out a file, read-only, unwritable; unreadable inputs -------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "build", "import", "leaderboard"])
def test_out_naming_a_file_is_refused_in_one_line(command, data, source_folder, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("keep me\n")
    results = tmp_path / "results.json"  # never read: the --out check comes first
    args = {
        "evaluate": _eval_args(data, target, "random"),
        "build": ["build", "photos", "--count", "2", "--out", str(target), "--quiet"],
        "import": ["import", "mine", "--from", str(source_folder), "--label", "real", "--out", str(target)],
        "leaderboard": ["leaderboard", str(results), "--out", str(target)],
    }[command]
    code, _, err = _main(args, capsys)
    assert code == 2 and "Traceback" not in err
    # The option's own check (click.Path(file_okay=False)) answers first, in one line.
    line = _one_error_line(err)
    assert "--out" in line and f"'{target}' is a file" in line
    assert target.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.fixture
def unwritable(tmp_path, request):
    """A folder afpbench may not write into: a read-only tmpfs (root) or a chmod 555 folder."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(folder)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs as root here ({res.stderr.strip()})")
        request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(folder)], capture_output=True))
        return folder, "read-only file system"
    folder.chmod(0o555)
    request.addfinalizer(lambda: folder.chmod(0o755))
    return folder, "permission denied"


@pytest.mark.parametrize("command", ["evaluate", "import", "leaderboard"])
def test_unwritable_out_is_refused_in_one_line(command, unwritable, data, source_folder, tmp_path, capsys):
    folder, why = unwritable
    out = folder / "sub"
    args = {
        "evaluate": _eval_args(data, out, "random"),
        "import": ["import", "mine", "--from", str(source_folder), "--label", "real", "--out", str(out)],
        "leaderboard": ["leaderboard", str(tmp_path / "results.json"), "--out", str(out)],
    }[command]
    code, _, err = _main(args, capsys)
    assert code == 2
    line = _one_error_line(err)
    assert why in line and str(folder) in line
    assert list(folder.iterdir()) == []


def _without_file_permission_override() -> None:
    """Run as a user whom file modes bind: root keeps its uid but loses CAP_DAC_OVERRIDE
    and CAP_DAC_READ_SEARCH (dropped from the bounding set before exec)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_permission_denied_input_and_output_in_one_line(data, tmp_path):
    # An unreadable dataset (its manifest) given to evaluate.
    import shutil

    mine = tmp_path / "data"
    shutil.copytree(data, mine)
    manifest = mine / "fakes" / "manifest.json"
    manifest.chmod(0)
    res = _afpbench(_eval_args(mine, tmp_path / "res", "random"), _env(), preexec_fn=_without_file_permission_override)
    assert res.returncode == 2
    line = _one_error_line(res.stderr)
    assert "permission denied" in line.lower() and str(manifest) in line

    # A site folder that cannot be written.
    [results] = [e.path for e in evaluate(_eval_cfg(data, tmp_path / "ok", "random"))]
    site = tmp_path / "site"
    site.mkdir(mode=0o555)
    res = _afpbench(["leaderboard", str(results), "--out", str(site)], _env(), preexec_fn=_without_file_permission_override)
    assert res.returncode == 2
    line = _one_error_line(res.stderr)
    assert "permission denied" in line.lower() and str(site) in line and list(site.iterdir()) == []


def test_os_error_messages_name_the_fix():
    cases = {
        errno.ENOSPC: "free some space", errno.EDQUOT: "free some space", errno.EFBIG: "ulimit -f", errno.EROFS: "writable folder",
        errno.EACCES: "check the permissions", errno.ENOTDIR: "a folder was expected", errno.EEXIST: "choose another path",
        errno.EISDIR: "a file was expected",
    }
    for code, fix in cases.items():
        msg = _os_error_message(OSError(code, os.strerror(code), "/x/y"))
        assert msg.startswith(os.strerror(code)) and fix in msg and "'/x/y'" in msg and "\n" not in msg
    # pyarrow's errors carry the errno but no file name
    assert _os_error_message(OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")).endswith("(--out).")


def test_flush_interval_is_validated(monkeypatch, data, tmp_path):
    from afpbench.errors import AfpbenchError

    monkeypatch.setenv("AFPBENCH_FLUSH_SECONDS", "soon")
    with pytest.raises(AfpbenchError, match="AFPBENCH_FLUSH_SECONDS='soon' is not a number"):
        _eval_cfg(data, tmp_path, "random")
    monkeypatch.setenv("AFPBENCH_FLUSH_SECONDS", "2.5")
    assert _eval_cfg(data, tmp_path, "random").flush_seconds == 2.5
    monkeypatch.delenv("AFPBENCH_FLUSH_SECONDS")
    assert _eval_cfg(data, tmp_path, "random").flush_seconds == 30.0
    with pytest.raises(AfpbenchError, match="0 seconds or more"):
        evaluate(_eval_cfg(data, tmp_path, "random", flush_seconds=-1.0))
