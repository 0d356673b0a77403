"""``afpbench build``: recipe -> source -> backend -> shards + manifest.

The steps, in the order that keeps failures cheap and finished work safe:

1. resolve the recipe, its generator card and backend, and check ``--param`` keys;
2. plan every row (``afpbench.sources``): ids, seeds, prompts, what input to load;
3. return at once if ``<out>/<name>`` already holds this exact build;
4. refuse a partial build left with other parameters, then load the model
   (``Backend.load``): a bad ``--model`` fails here, before anything is written;
5. generate batch after batch: inputs of the next batch are loaded in a thread while the
   model works, and PNG encoding + writing run in another thread; rows are persisted as
   parts every few seconds, so a killed build loses at most the last seconds of work;
6. when every process is done, rank 0 finalizes (sorted rows, shards, card, manifest)
   and swaps the folder in: an existing dataset is replaced only by a complete one.

Replacing: ``<out>/<name>`` holding this exact build means nothing to do; holding
anything else (another build, an import, files that are no dataset) is refused before
the model loads unless ``overwrite`` (``--overwrite``) is given. A partial build of the
same recipe and parameters always resumes.

Provenance: the manifest and card say what was done, not only what the recipe asks
for. A ``--model`` other than the generator card's and a ``--source`` that is not the
recipe's collections are listed under ``overrides`` (the recipe's value and the one
used), and a model folder made by ``afpbench.generate.tiny`` (marked with
``afpbench_standin.json``) makes the set a declared stand-in: its description, card
title and rows' ``generator`` say so and name the stand-in.

Determinism: batches are cut at fixed positions of the planned row list and every row is
seeded from its own seed, so a resumed build and a build split over processes run the
same batches as an uninterrupted one, and on one machine produce the same bytes.

Distributed (``accelerate launch --num_processes K -m afpbench build ...`` or
``torchrun --nproc_per_node K -m afpbench build ...``): the process group
(``afpbench._util.runtime``, shared with evaluate) splits batches across processes and
is torn down when the build returns or fails.

Wiring: the sources plan the rows and the backend generates them; neither imports the
other (their contract is ``afpbench.plan``). ``build`` hands the backend the sources'
``Inputs`` (``afpbench.sources.SourceInputs``) for what it reads besides each row's input.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from afpbench._util.locking import check_output_dir, lock_scope
from afpbench._util.runtime import ProcessGroup, process_group
from afpbench.errors import AfpbenchError, DatasetError
from afpbench.generate.base import Output
from afpbench.plan import BuildConfig, Inputs, WorkItem

FLUSH_SECONDS_ENV = "AFPBENCH_FLUSH_SECONDS"
DEFAULT_FLUSH_SECONDS = 10.0

log = logging.getLogger(__name__)


# -- helpers --------------------------------------------------------------------------
def _log(config: BuildConfig, group: ProcessGroup, message: str) -> None:
    if not config.quiet and group.is_main:
        log.info(message)


def _key_text(key: dict[str, Any]) -> str:
    # The same serialization DatasetWriter uses for its resume check.
    return json.dumps(key, sort_keys=True, default=str)


def _already_built(final: Path, key: dict[str, Any]) -> bool:
    """True when ``final`` is a complete dataset made by this exact build."""
    mpath = final / "manifest.json"
    if not mpath.is_file():
        return False
    try:
        manifest = json.loads(mpath.read_text())
        same = _key_text(manifest.get("build", {}).get("key")) == _key_text(key)
        if not same:
            return False
        from afpbench.dataset import DatasetReader

        DatasetReader(final)  # shards present with the listed sizes
        return True
    except (ValueError, OSError, DatasetError):
        return False


def _check_target(final: Path, key: dict[str, Any], overwrite: bool) -> bool:
    """Refuse, before any model loads, to replace what ``final`` holds with another build.

    Returns True when ``final`` holds this same build (damaged: not ``_already_built``),
    which the rebuild may replace whatever its fingerprint.
    """
    from afpbench.dataset import existing_target

    state, manifest = existing_target(final)
    if state in ("absent", "empty"):
        return False
    if state == "dataset" and _key_text((manifest.get("build") or {}).get("key")) == _key_text(key):
        return True
    if overwrite:
        return False
    what = (f"the dataset '{manifest.get('name')}' ({manifest.get('num_rows')} rows) made by other parameters or by an import"
            if state == "dataset" else "files that are not an afpbench dataset")
    raise DatasetError(f"{final} already holds {what}; pass --overwrite to replace it, or choose another --name or --out.")


def _check_ids(items: list[WorkItem], count: int) -> None:
    from collections import Counter

    from afpbench.dataset import has_control

    if len(items) != count:
        raise RuntimeError(f"source planned {len(items)} rows for count {count}")
    repeated = [i for i, n in Counter(it.id for it in items).items() if n > 1]
    if repeated:
        raise AfpbenchError(
            f"The source gives {len(repeated)} id(s) to several rows (e.g. '{repeated[0]}'); ids come from file names, "
            f"so rename or remove the files whose names collide."
        )
    bad = next((it for it in items if has_control(it.id)), None)
    if bad is not None:
        raise AfpbenchError(f"Row id {bad.id!r} (from {bad.source!r}) holds control characters; rename that file.")


def _local_dirs(ref: Any) -> list[Path]:
    out = []
    for part in str(ref or "").split(","):
        p = Path(part.strip()).expanduser()
        if part.strip() and p.exists():
            out += [p if p.is_dir() else p.parent, (p if p.is_dir() else p.parent).parent]
    return out


def _standin(config: BuildConfig, provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The stand-in marker of the model folder(s) used, if any (see afpbench.generate.tiny)."""
    from afpbench.generate.tiny import STANDIN_FILE

    refs = [config.model, provenance.get("model_id"), provenance.get("model")]
    refs += [s.get("model_id") or s.get("bundled_in") for s in provenance.get("stages") or [] if isinstance(s, dict)]
    for ref in refs:
        for folder in _local_dirs(ref):
            marker = folder / STANDIN_FILE
            if marker.is_file():
                try:
                    data = json.loads(marker.read_text())
                except ValueError:
                    data = {}
                return {"kind": str(data.get("kind", "unknown")), "builder": data.get("builder", "afpbench.generate.tiny"),
                        "folder": str(folder), "note": data.get("note", "random weights built from configs")}
    return None


def _recipe_source(recipe) -> dict[str, Any]:
    src = recipe.source
    out: dict[str, Any] = {"kind": src.kind}
    if src.mix:
        out["mix"] = dict(src.mix)
    if src.dataset:
        out["dataset"] = src.dataset
    if src.split:
        out["split"] = src.split
    return out


def _overrides(recipe, card, config: BuildConfig, planned_info: dict[str, Any]) -> dict[str, Any]:
    """What this build used instead of the recipe's own model and source, recipe value beside used value."""
    out: dict[str, Any] = {}
    if card is not None and config.model and config.model != card.model_id:
        default = card.model_id if not card.stages else ",".join([str(card.model_id)] + [s.model_id for s in card.stages])
        out["model"] = {"recipe": default, "used": config.model}
    kind = recipe.source.kind
    wanted = set(recipe.source.mix) or ({recipe.source.dataset} if recipe.source.dataset else set())
    if config.source == "photos" and kind != "photos":
        out["source"] = {"recipe": _recipe_source(recipe), "used": "photos (crops of the real photos bundled with scikit-image, scikit-learn and matplotlib)"}
    elif kind == "hf_dataset" and config.source and config.source != recipe.source.dataset:
        out["source"] = {"recipe": _recipe_source(recipe), "used": config.source}
    elif kind in ("captions", "images", "imagenet", "import") and config.source:
        used = {k for k, n in (planned_info.get("mix") or {}).items() if n}
        if wanted and used and used != wanted:
            # e.g. sd2 (COCO + Flickr captions) prompted from one plain caption file
            out["source"] = {"recipe": _recipe_source(recipe), "used": {"spec": config.source, "mix": planned_info.get("mix")}}
    return out


def _describe(recipe, card, standin: dict[str, Any] | None, overrides: dict[str, Any]) -> str:
    """The set's description as built: the recipe's own words only when nothing was substituted."""
    if not standin and not overrides:
        return recipe.description
    what = []
    if standin:
        what.append(f"Stand-in build: images come from afpbench's tiny random-weight '{standin['kind']}' pipeline "
                    f"({standin['builder']}), not from {card.name if card else 'the recipe generator'}")
    elif "model" in overrides:
        what.append(f"Built with the model {overrides['model']['used']} instead of the recipe's {overrides['model']['recipe']}")
    if "source" in overrides:
        used = overrides["source"]["used"]
        what.append(f"inputs from {used['spec'] if isinstance(used, dict) else used} instead of the recipe's {recipe.source.kind} "
                    f"({', '.join(f'{k} {v}' for k, v in (recipe.source.mix or {}).items()) or recipe.source.dataset or 'its own source'})")
    return "; ".join(what) + f". These are not the recipe's images; the recipe describes the real set as: {recipe.description}"


def _lock_set(out: Path, name: str, group: ProcessGroup) -> None:
    """Refuse a second build or import of this set into this folder while one runs.

    The main process takes the set's lock (the same one ``import`` takes), so the
    processes of one distributed build never lock each other out; then it undoes what a
    killed run may have left (see ``dataset.recover_interrupted``).
    """
    from afpbench._util.locking import ensure_output_dir, hold, lock_path
    from afpbench.dataset import recover_interrupted

    if group.is_main:
        ensure_output_dir(out)
    hold(lock_path(out, name), out / name, main=group.is_main, share=group.broadcast if group.distributed else None)
    if group.is_main:
        recover_interrupted(out, name)


def _check_partial(out: Path, name: str, key: dict[str, Any]) -> None:
    """Refuse, before loading any model, a partial build that was made with other parameters."""
    from afpbench.dataset import PARTIAL_DIR

    info = out / PARTIAL_DIR / name / "info.json"
    if info.is_file():
        try:
            old = json.loads(info.read_text()).get("resume_key")
        except ValueError:
            return
        if old != _key_text(key):
            raise DatasetError(
                f"{info.parent} holds a partial build of '{name}' with other parameters; re-run with the same parameters to resume, "
                f"or delete that folder to start over."
            )


def _partial_rows(writer) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every written row's meta (deduplicated by id) and the row count of each rank's parts."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    metas: dict[str, dict[str, Any]] = {}
    by_rank: dict[str, int] = {}
    for part in sorted((writer.partial_dir / "parts").glob("part-*.arrow")):
        rank = str(int(part.stem.split("-")[1][1:]))
        with pa.memory_map(str(part)) as src:
            table = ipc.open_file(src).read_all().select(["id", "meta"])
        for rid, meta in zip(table.column("id").to_pylist(), table.column("meta").to_pylist()):
            if rid not in metas:
                metas[rid] = json.loads(meta or "{}")
                by_rank[rank] = by_rank.get(rank, 0) + 1
    return list(metas.values()), dict(sorted(by_rank.items(), key=lambda kv: int(kv[0])))


def _choices(recipe, config: BuildConfig, count: int) -> dict[str, dict[str, Any]]:
    out = {k: {"value": p.value, "note": p.note} for k, p in recipe.choices().items()}
    for k, v in (config.params or {}).items():
        out[k] = {"value": v, "note": f"overridden with --param (recipe: {recipe.params[k].value!r})"}
    if count != recipe.count.value:
        out["count"] = {"value": count, "note": f"overridden with --count (recipe: {recipe.count.value})"}
    if config.source == "photos":
        out["source"] = {"value": "photos", "note": "crops of the bundled real photos instead of the recipe's source (offline stand-in)"}
    return out


# -- generation loop ------------------------------------------------------------------
class _Sink:
    """Encodes and writes finished batches in a background thread while the model works."""

    def __init__(self, writer, make_row, done: set[str], progress, flush_seconds: float):
        self.writer, self.make_row, self.done, self.progress = writer, make_row, done, progress
        self.flush_seconds = flush_seconds
        self.queue: queue.Queue = queue.Queue(maxsize=2)  # bounded: memory stays flat
        self.error: BaseException | None = None
        self.written = 0
        self.thread = threading.Thread(target=self._loop, name="afpbench-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            job = self.queue.get()
            if job is None:
                return
            if self.error is not None:
                continue  # drain: the main thread will see the error
            items, outputs = job
            try:
                n = 0
                for item, out in zip(items, outputs):
                    if item.id in self.done:
                        continue  # a resumed batch: this row was written before
                    self.writer.add(self.make_row(item, out), index=item.index)
                    n += 1
                if time.monotonic() - last >= self.flush_seconds:
                    self.writer.flush()
                    last = time.monotonic()
                self.written += n
                self.progress.update(n)
            except BaseException as exc:  # surfaced to the main thread
                self.error = exc

    def put(self, items: list[WorkItem], outputs: list[Output]) -> None:
        while True:
            self.check()
            try:
                self.queue.put((items, outputs), timeout=0.2)
                return
            except queue.Full:
                continue

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Write everything queued so far, then stop the thread."""
        while self.thread.is_alive():
            try:
                self.queue.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        self.thread.join()


def _load_inputs(inputs: Inputs, batch: list[WorkItem]) -> list[Any]:
    return [inputs.load_input(item) for item in batch]


def _generate(backend, batches: list[list[WorkItem]], sink: _Sink) -> None:
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="afpbench-inputs") as pool:
        pending = pool.submit(_load_inputs, backend.inputs, batches[0])
        for k, batch in enumerate(batches):
            inputs = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(_load_inputs, backend.inputs, batches[k + 1])
            outputs = backend.run(batch, inputs)
            if len(outputs) != len(batch):
                raise RuntimeError(f"{type(backend).__name__}.run returned {len(outputs)} outputs for {len(batch)} items")
            sink.put(batch, outputs)


# -- entry point ----------------------------------------------------------------------
@lock_scope
def build(recipe_name: str, config: BuildConfig | None = None, *, overwrite: bool = False) -> Path:
    """Build (or resume, or find already built) the set ``recipe_name``; return its folder.

    ``overwrite`` allows replacing a different dataset already at ``<out>/<name>``.
    """
    from afpbench.catalog import get_generator, get_recipe
    from afpbench.generate import backend_for
    from afpbench.plan import check_param_keys

    config = replace(config or BuildConfig())
    config.params = dict(config.params or {})
    recipe = get_recipe(recipe_name)
    card = get_generator(recipe.generator) if recipe.generator else None
    backend_name = backend_for(recipe, card)
    check_param_keys(recipe, config.params)
    if config.batch_size < 1:
        raise AfpbenchError(f"--batch-size must be at least 1 (got {config.batch_size}).")
    if backend_name != "sample":  # the sample backend copies images: no device or dtype
        from afpbench._util.devices import canonical_dtype, check_device_name

        check_device_name(config.device or "auto")  # a misspelt --device or --dtype fails before any work
        canonical_dtype(config.dtype)
    from afpbench.dataset import check_set_name

    name = check_set_name(config.name or recipe.name, "--name")
    check_output_dir(Path(config.out).expanduser())  # a file or unwritable --out fails before any work
    count = recipe.count.value if config.count is None else int(config.count)
    seed = recipe.seed if config.seed is None else int(config.seed)
    config.count, config.seed = count, seed

    from afpbench.sources import SourceInputs
    from afpbench.sources import plan as plan_rows

    # Planning first: a missing or wrong --source fails before torch is even imported.
    planned = plan_rows(recipe, config)
    _check_ids(planned.items, count)
    with process_group() as group:
        return _run(recipe, card, backend_name, config, planned, name, group, SourceInputs(), overwrite)


def _run(recipe, card, backend_name: str, config: BuildConfig, planned, name: str, group: ProcessGroup, inputs: Inputs, overwrite: bool) -> Path:
    """Everything after planning, inside the process group (torn down by the caller)."""
    from afpbench.generate.base import build_dtype
    from afpbench.plan import resolve_params
    from afpbench.registry import BACKENDS

    items, count, seed = planned.items, int(config.count), int(config.seed)
    dtype = None
    if backend_name != "sample":
        from afpbench._util.devices import resolve_device

        config.device = resolve_device(config.device, group.device)
        dtype = config.dtype = build_dtype(config, card, config.device)
    params = resolve_params(recipe, config)
    key = {
        "recipe": recipe.name, "version": recipe.version, "count": count, "seed": seed, "params": params,
        "model": config.model or (card.model_id if card else None), "source": config.source, "dtype": dtype,
    }
    out = Path(config.out).expanduser()
    final = out / name
    if _already_built(final, key):
        _log(config, group, f"{final} is already built with these parameters; nothing to do.")
        return final
    _lock_set(out, name, group)
    same_build = _check_target(final, key, overwrite)
    _check_partial(out, name, key)

    from afpbench.generate.base import check_recipe
    from afpbench.sources import source

    backend_cls = BACKENDS.get(backend_name)
    check_recipe(backend_cls, recipe, card, source(recipe.source.kind).param_names)
    backend = backend_cls(recipe, card, config, inputs)
    t0 = time.monotonic()
    provenance = backend.load()
    load_seconds = time.monotonic() - t0

    from afpbench.dataset import DatasetWriter, WriterOptions, encode_png, make_row, to_rgb

    generator_info: dict[str, Any] = {"name": card.name, "license": card.license, "paper": card.paper, "url": card.url} if card else {}
    generator_info.update({k: v for k, v in provenance.items() if v is not None or k in ("revision",)})
    standin = _standin(config, provenance)
    overrides = _overrides(recipe, card, config, planned.info)
    if standin:
        generator_info["standin"] = standin
    info = {
        "recipe": {"name": recipe.name, "version": recipe.version, "params": params, "choices": _choices(recipe, config, count),
                   "description": recipe.description, "source": _recipe_source(recipe)},
        "label": recipe.label,
        "family": recipe.family,
        "paper_name": recipe.paper_name,
        "description": _describe(recipe, card, standin, overrides),
        "seed": seed,
        "source": planned.info,
        "generator": generator_info,
        "resume_key": key,
    }
    if overrides:
        info["overrides"] = overrides
    if standin:
        info["standin"] = standin
    writer = DatasetWriter(out, name, info=info, options=WriterOptions(rank=group.rank, overwrite=overwrite or same_build))
    done = writer.done_ids()
    row_generator = card.name if card else ""
    if standin:
        row_generator = f"{standin['kind']} stand-in for {row_generator or recipe.name}"

    def to_row(item: WorkItem, output: Output) -> dict[str, Any]:
        image = output.image
        if output.data is not None:
            data, fmt = output.data, (output.format or "png")
        else:
            data, fmt = encode_png(to_rgb(image)), "png"
        return make_row(
            id=item.id, image=data, label=recipe.label_id, dataset=name, family=recipe.family, generator=row_generator,
            prompt=item.prompt, source=item.source, seed=item.seed, width=image.width, height=image.height, format=fmt,
            meta={**item.meta, **output.meta},
        )

    b = config.batch_size
    batches = [items[i : i + b] for i in range(0, count, b)]
    mine = [batches[k] for k in group.split(list(range(len(batches))))]
    todo = [batch for batch in mine if any(it.id not in done for it in batch)]
    total = sum(len(batch) for batch in mine)
    already = total - sum(1 for batch in todo for it in batch if it.id not in done)
    if already:
        _log(config, group, f"resuming '{name}': {len(done)} of {count} rows already written")

    from tqdm.auto import tqdm

    flush_seconds = float(os.environ.get(FLUSH_SECONDS_ENV, DEFAULT_FLUSH_SECONDS))
    progress = tqdm(total=total, initial=already, unit="img", desc=name, disable=config.quiet or not group.is_main, dynamic_ncols=True, smoothing=0.1)
    t1 = time.monotonic()
    sink = _Sink(writer, to_row, done, progress, flush_seconds)
    try:
        _generate(backend, todo, sink)
    finally:
        # Keep every finished row, even on an exception or Ctrl-C.
        sink.close()
        writer.flush()
        progress.close()
    sink.check()
    generate_seconds = time.monotonic() - t1

    group.barrier()
    if group.is_main:
        metas, by_rank = _partial_rows(writer)
        build_info = {
            "key": key,
            "processes": group.world,
            "rows_by_rank": by_rank,
            "batch_size": b,
            "device": config.device,
            "dtype": dtype,
            "load_seconds": round(load_seconds, 3),
            "generate_seconds": round(generate_seconds, 3),
            "images_per_second": round(sink.written / generate_seconds, 3) if generate_seconds > 0 and sink.written else None,
        }
        if "torch" in sys.modules:
            # CPU kernels split work by thread: identical bytes need the same thread count.
            build_info["torch_threads"] = sys.modules["torch"].get_num_threads()
        writer.finalize(extra_manifest={**backend.summarize(metas), "build": build_info})
        _log(config, group, f"built {final} ({count} rows)")
    group.barrier()
    return final


# ``afpbench.build(...)`` calls build even after this module was imported (see afpbench._util.callable_module).
from afpbench._util.callable_module import make_callable  # noqa: E402

make_callable(__name__, build)
