"""The ``sample`` backend: rows that are existing images, copied or cropped, not generated.

It builds the real sets from the user's copies (``afpbench build coco --source
.../train2014``), the bundled ``photos`` set, and DiffusionDB (a seeded sample of an HF
dataset with its prompts). Whole images keep their original encoded bytes (JPEG stays
JPEG: re-encoding would change the compression traces a detector may rely on); crops
are new images and are stored as PNG.
"""

from __future__ import annotations

from typing import Any

from afpbench.generate.base import Backend, Output
from afpbench.plan import WorkItem


class SampleBackend(Backend):
    kind = "sample"
    tasks = ("sample",)

    def load(self) -> dict[str, Any]:
        # Nothing to load: the provenance of sampled rows is the source, recorded by build.
        return {
            "model_id": self.card.model_id if self.card else None,
            "revision": None,
            "pipeline": "copy",
            "scheduler": None,
            "dtype": None,
            "device": None,
        }

    def run(self, items: list[WorkItem], inputs: list[Any]) -> list[Output]:
        outputs = []
        for item, image in zip(items, inputs):
            if image is None:
                raise ValueError(f"row {item.id} has no input image")
            original = self.inputs.load_original(item)
            meta = {"mode": "copy" if original else "crop"}
            if original:
                data, fmt = original
                outputs.append(Output(image=image, meta=meta, data=data, format=fmt))
            else:
                outputs.append(Output(image=image, meta=meta))
        return outputs

    @staticmethod
    def summarize(metas: list[dict[str, Any]]) -> dict[str, Any]:
        copied = sum(1 for m in metas if m.get("mode") == "copy")
        return {"sample": {"copied": copied, "cropped": len(metas) - copied}}
