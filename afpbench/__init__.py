"""afpbench: rebuildable test sets, detectors and leaderboards for fake-image detection.

Importing this package is cheap: heavy libraries (torch, diffusers, transformers,
datasets) are imported inside the functions that need them. The Python API, each name
imported on first use (docs/api.md has a runnable example for each)::

    import afpbench
    det = afpbench.load_detector("npr", weights="model_epoch_last_3090.pth")
    det.predict(["photo.jpg"])                     # [Prediction(p_fake=..., fake=..., threshold=0.5)]
    afpbench.detect(afpbench.DetectConfig(paths=["folder/"], detectors=["format", "npr"]))
    afpbench.evaluate(afpbench.EvalConfig(detectors=["npr"], data=["data"], profile="v3"))
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

LABEL_NAMES = ("real", "fake")  # project-wide: 0 = real, 1 = fake

# Public name -> "module:attribute" (or just "module": a module callable as its main
# function, see afpbench._util.callable_module), imported when first asked for.
_LAZY = {
    "load_detector": "afpbench.detectors:load_detector",
    "list_detectors": "afpbench.listing:list_detectors",
    "list_datasets": "afpbench.listing:list_datasets",
    "detect": "afpbench.detect",
    "DetectConfig": "afpbench.detect:DetectConfig",
    "build": "afpbench.build",
    "BuildConfig": "afpbench.plan:BuildConfig",
    "evaluate": "afpbench.evaluate",
    "EvalConfig": "afpbench.evaluate:EvalConfig",
    "train": "afpbench.train",
    "TrainConfig": "afpbench.train:TrainConfig",
    "open_dataset": "afpbench.dataset:open_dataset",
    "audit": "afpbench.audit",
    "AuditConfig": "afpbench.audit:AuditConfig",
    "leaderboard": "afpbench.leaderboard",
    "gallery": "afpbench.gallery",
    "GalleryConfig": "afpbench.gallery:GalleryConfig",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'afpbench' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = import_module(module)
    if attr:
        value = getattr(value, attr)
        globals()[name] = value  # the next lookup is a plain attribute (a module binds itself)
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["LABEL_NAMES", "__version__", *_LAZY]
