"""Publish a dataset folder (card, manifest, shards) to the Hugging Face Hub.

Regenerated sets can then be shared and loaded with ``load_dataset("ORG/NAME")`` instead
of downloaded from slow archives. Everything that can be checked locally (the folder
verifies, the card's metadata is valid for the Hub, the repo id is well formed) is
checked before any network access; offline, the command fails at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from afpbench.errors import AfpbenchError

UPLOAD_PATTERNS = ("README.md", "preview.jpg", "manifest.json", "data/*.parquet")


@dataclass
class PushPlan:
    folder: Path
    repo_id: str
    private: bool
    files: list[tuple[str, int]]

    def lines(self) -> list[str]:
        total = sum(n for _, n in self.files)
        out = [f"would upload {len(self.files)} files ({total / 1e6:.1f} MB) to https://huggingface.co/datasets/{self.repo_id}" + (" (private)" if self.private else "")]
        out += [f"  {rel}  {n / 1e6:.2f} MB" for rel, n in self.files]
        return out


def plan_push(folder: Path, repo_id: str, private: bool = False) -> PushPlan:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from afpbench.card import validate_card
    from afpbench.dataset import verify

    if "/" not in repo_id:
        raise AfpbenchError(f"Repo id '{repo_id}' needs an owner: write it as ORG/NAME (e.g. my-lab/afpbench-sd3).")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise AfpbenchError(f"Repo id '{repo_id}' is not valid on the Hub ({str(exc).splitlines()[0]}); use letters, digits, '-', '_', '.'.") from exc
    report = verify(folder)
    if not report.ok:
        raise AfpbenchError(f"{folder} does not verify ({report.problems[0]}); rebuild or re-import it before pushing.")
    card = folder / "README.md"
    if not card.exists():
        raise AfpbenchError(f"{folder} has no README.md dataset card; rebuild the set (the card is written at finalize).")
    problems = validate_card(card.read_text())
    if problems:
        raise AfpbenchError(f"The dataset card {card} is not valid: {problems[0]}; fix the front matter or rebuild the set.")
    files = []
    for pattern in UPLOAD_PATTERNS:
        for p in sorted(folder.glob(pattern)):
            files.append((p.relative_to(folder).as_posix(), p.stat().st_size))
    return PushPlan(folder, repo_id, private, files)


def push(plan: PushPlan) -> str:
    """Create the dataset repo (if needed) and upload; returns the repo URL."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise AfpbenchError("Cannot push: HF_HUB_OFFLINE is set (offline mode); unset it on a machine with network access, or use --dry-run.")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    if not api.token and not os.environ.get("HF_TOKEN"):
        from huggingface_hub import get_token

        if not get_token():
            raise AfpbenchError("Cannot push: not logged in to the Hugging Face Hub; run 'hf auth login' or set HF_TOKEN.")
    try:
        api.create_repo(plan.repo_id, repo_type="dataset", private=plan.private, exist_ok=True)
        api.upload_folder(folder_path=str(plan.folder), repo_id=plan.repo_id, repo_type="dataset",
                          allow_patterns=list(UPLOAD_PATTERNS), commit_message=f"afpbench push of {plan.folder.name}")
    except HfHubHTTPError as exc:
        raise AfpbenchError(f"The Hub refused the upload ({str(exc).splitlines()[0]}); check the token's write access to {plan.repo_id}.") from exc
    except OSError as exc:  # connection errors: no network, DNS, proxy
        raise AfpbenchError(f"Cannot reach the Hugging Face Hub ({type(exc).__name__}); check the network, or use --dry-run.") from exc
    return f"https://huggingface.co/datasets/{plan.repo_id}"
