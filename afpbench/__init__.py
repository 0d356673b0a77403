"""afpbench: rebuildable test sets, detectors and leaderboards for fake-image detection.

Importing this package is cheap: heavy libraries (torch, diffusers, transformers,
datasets) are imported inside the functions that need them.
"""

__version__ = "0.1.0"

LABEL_NAMES = ("real", "fake")  # project-wide: 0 = real, 1 = fake
