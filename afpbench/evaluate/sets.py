"""The sets an evaluation reads: which ones (names, roles, profile), where they are, and
opening them after checking their content against their manifests."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from afpbench.errors import AfpbenchError, DatasetError
from afpbench.evaluate.config import ROLES

if TYPE_CHECKING:  # pragma: no cover
    from afpbench._util.runtime import ProcessGroup
    from afpbench.dataset import DatasetReader


@dataclass
class EvalSet:
    """A set opened for evaluation: its first ``n_eff`` rows are evaluated."""

    name: str
    role: str  # held-in, held-out, calibration
    reader: DatasetReader
    n_eff: int
    ids: list[str]
    labels: np.ndarray
    family: str | None

    @property
    def fingerprint(self) -> str:
        return self.reader.fingerprint


def find_set(name: str, data: Sequence[Path]) -> Path:
    """The folder of set ``name``: the first ``DATA/name`` that holds a manifest."""
    for d in data:
        if (Path(d) / name / "manifest.json").is_file():
            return Path(d) / name
    where = ", ".join(str(d) for d in data) or "(no --data given)"
    raise DatasetError(f"No folder for set '{name}' in {where}; build it (afpbench build {name}) or import it, or leave it out of --datasets.")


def discover(data: Sequence[Path]) -> list[str]:
    """Every set folder (one holding manifest.json) in the data folders, in name order."""
    names: list[str] = []
    for d in data:
        if not Path(d).is_dir():
            raise DatasetError(f"--data {d} is not a folder; pass the folder that holds one folder per set.")
        for sub in sorted(Path(d).iterdir()):
            if (sub / "manifest.json").is_file() and sub.name not in names:
                names.append(sub.name)
    if not names:
        raise DatasetError(f"No dataset folders (with manifest.json) in {', '.join(map(str, data))}; build or import sets there first.")
    return names


def resolve_sets(
    data: Sequence[Path], datasets: list[str] | None = None, profile: str | None = None, roles: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str], str | None]:
    """The test sets, their roles, and the profile name (None for a custom list).

    Sets: ``datasets``, else the profile's, else every set found in ``data``. Roles:
    ``roles``, else the profile's, else the catalog recipe's, else held-out.
    """
    from afpbench import catalog

    roles = roles or {}
    prof = catalog.get_profile(profile) if profile else None
    if datasets:
        names = list(dict.fromkeys(datasets))
        if prof:
            outside = [n for n in names if n not in prof.names]
            if outside:
                raise AfpbenchError(f"{', '.join(outside)} not in profile {prof.name}; drop --profile or those sets.")
    elif prof:
        names = prof.names
    else:
        names = discover(data)
    unknown_roles = [n for n in roles if n not in names]
    if unknown_roles:
        raise AfpbenchError(f"Roles given for {', '.join(unknown_roles)}, which are not evaluated; fix the roles mapping.")
    known = catalog.recipes()
    out: dict[str, str] = {}
    for n in names:
        if n in roles:
            role = roles[n]
        elif prof:
            role = prof.role(n)
        elif n in known:
            role = known[n].role
        else:
            role = "held-out"  # a set outside the catalog is, by definition, not trained on
        if role not in ROLES:
            raise AfpbenchError(f"Role '{role}' of set '{n}' is not held-in or held-out; fix the roles mapping.")
        out[n] = role
    return names, out, (prof.name if prof else None)


def locate_sets(data: Sequence[Path], datasets: list[str] | None = None, profile: str | None = None) -> tuple[list[str], dict[str, str], str | None, dict[str, Path]]:
    """Set names, roles, profile and folders from data folders or set folders: evaluate's rules.

    A DATA entry holding ``manifest.json`` is itself a set; any other is a folder of sets.
    """
    data = [Path(d) for d in data]
    direct = {p.name: p for p in data if (p / "manifest.json").is_file()}
    parents = [p for p in data if p not in direct.values()]
    for p in parents:
        if not p.is_dir():
            raise AfpbenchError(f"{p} is not a folder; pass data folders (one folder per set inside) or set folders.")
    names_cfg = list(direct) if (direct and not datasets and not profile) else datasets
    names, roles, prof = resolve_sets(parents or [d.parent for d in direct.values()], names_cfg, profile)
    folders = {n: direct[n] if n in direct else find_set(n, parents) for n in names}
    return names, roles, prof, folders


def open_sets(wanted: Sequence[tuple[str, str]], data: Sequence[Path], limit: int | None, pg: ProcessGroup) -> tuple[dict[str, EvalSet], float]:
    """Open the sets ``(name, role)``, check their content against their manifests (and
    return the seconds that took), then read the ids and labels to evaluate."""
    from afpbench.dataset import open_dataset

    readers = {}
    for name, _ in wanted:
        reader = open_dataset(find_set(name, data))
        if reader.num_rows == 0:
            raise DatasetError(f"Set '{name}' has no rows; build or import it again, or leave it out.")
        readers[name] = reader
    seconds = verify_sets(readers, limit, pg)
    return {name: _eval_set(name, role, readers[name], limit) for name, role in wanted}, seconds


def verify_sets(readers: dict[str, Any], limit: int | None, pg: ProcessGroup) -> float:
    """Refuse, before anything is scored or cached, a set whose content differs from its
    manifest; return the seconds it took.

    Without ``limit`` every row is read back to recompute the content fingerprint, row
    total and label counts, so the fingerprint a results file records is the one of the
    data that was scored (and a mismatch names the shard whose sha256 changed). With a
    ``limit`` of N the shards holding the first N rows are hashed (sha256): a fingerprint
    needs every row. Done once, on the main process (the others wait for its verdict),
    before the workers start; ``benchmarks/bench_data_check.py`` measures the cost.
    """
    error, seconds = None, 0.0
    if pg.is_main:
        from afpbench.dataset import check_contents

        t0 = time.perf_counter()
        items = [(r.path, r.manifest, None if limit is None else min(limit, r.num_rows)) for r in readers.values()]
        for (name, reader), report in zip(readers.items(), check_contents(items, sha256=False)):
            if report.problems:
                error = (
                    f"Set '{name}' ({reader.path}) does not match its manifest: {report.problems[0]}; nothing was scored. "
                    f"Run 'afpbench verify {reader.path}' and rebuild (or re-download) the set."
                )
                break
        seconds = time.perf_counter() - t0
    error = pg.broadcast(error)
    if error:
        raise DatasetError(error)
    return seconds


def _eval_set(name: str, role: str, reader: Any, limit: int | None) -> EvalSet:
    from afpbench import catalog

    n_eff = reader.num_rows if limit is None else min(limit, reader.num_rows)
    ids = reader.ids(n_eff)
    labels = np.asarray(reader.labels(n_eff), dtype=np.int8)
    if len(set(ids)) != len(ids):
        raise DatasetError(f"Set '{name}' has duplicate row ids; rebuild it (ids must be unique).")
    family = reader.manifest.get("family") or None
    if not family and name in catalog.recipes():
        family = catalog.get_recipe(name).family
    return EvalSet(name, role, reader, n_eff, ids, labels, family)


__all__ = ["EvalSet", "discover", "find_set", "locate_sets", "open_sets", "resolve_sets", "verify_sets"]
