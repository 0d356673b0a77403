"""``afpbench train``: train a detector on afpbench datasets (thin wrapper over afpbench.train)."""

from __future__ import annotations

import click

from afpbench.cli._options import device_option, dtype_option, out_option, quiet_option, workers_option
from afpbench.cli._params import NON_NEGATIVE, POSITIVE, SEED, FiniteFloat


def _paths(values: tuple[str, ...]) -> list[str]:
    # Accept both repeated flags (--train a --train b) and comma lists (--train a,b).
    return [p for v in values for p in v.split(",") if p]


@click.command("train")
@click.option("--detector", required=True, help="Trainable detector (see 'afpbench list detectors', column trainable).")
@click.option("--train", "train_dirs", multiple=True, required=True, help="Training dataset folder (repeat or comma-separate); labels come from the data.")
@click.option("--val", "val_dirs", multiple=True, help="Validation dataset folder(s); the epoch with the lowest validation loss is kept.")
@out_option(required=True, help="Output folder (checkpoints/, best/, train_result.json).")
@click.option("--base", default=None, help="Backbone folder or hub id (e.g. a local InstructBLIP, 'hf', or BLIP+LLM).")
@click.option("--weights", default=None, type=click.Path(exists=True), help="Start from these weights instead of fresh trainable parameters.")
@device_option()
@dtype_option(help="fp16/float16 needs a GPU; default: the detector's.")
@click.option("--image-size", type=POSITIVE, default=None, help="Input size override (tiny/fast runs); recorded in the saved card.")
@click.option("--epochs", type=POSITIVE, default=None, help="Default: the detector's recipe (AntifakePrompt: 10).")
@click.option("--batch-size", type=POSITIVE, default=None, help="Default: the recipe (AntifakePrompt: 6).")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=None, help="Default: the recipe (AntifakePrompt: 1e-5).")
@click.option("--weight-decay", type=FiniteFloat(min=0), default=None, help="Default: the recipe (AntifakePrompt: 0.05).")
@click.option("--beta1", type=FiniteFloat(0, 1, max_open=True), default=None, help="AdamW beta1 (default 0.9).")
@click.option("--beta2", type=FiniteFloat(0, 1, max_open=True), default=None, help="AdamW beta2 (default 0.999).")
@click.option("--scheduler", type=click.Choice(["cosine", "constant"]), default=None, help="Default: cosine to 0.")
@click.option("--warmup-steps", type=NON_NEGATIVE, default=None, help="Default: 0.")
@click.option("--mixed-precision", type=click.Choice(["auto", "no", "fp16", "bf16"]), default="auto", show_default=True)
@click.option("--seed", type=SEED, default=42, show_default=True)
@click.option("--limit", type=POSITIVE, default=None, help="Use at most N rows of each dataset (default: all).")
@workers_option(default=0, old_name="--workers", help="Threads decoding and preprocessing images.")
@click.option("--threads", type=POSITIVE, default=None, help="torch CPU threads during training (1 is fastest for tiny models on a busy CPU).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from the last epoch checkpoint in --out.")
@click.option("--stop-after-epochs", type=POSITIVE, default=None, help="Stop after N epochs in this call (resume later).")
@quiet_option(help="No progress bar.")
def command(detector, train_dirs, val_dirs, out, base, weights, device, dtype, image_size, epochs, batch_size, lr, weight_decay, beta1, beta2, scheduler,
            warmup_steps, mixed_precision, seed, limit, num_workers, threads, resume, stop_after_epochs, quiet):
    """Train a detector (AntifakePrompt's soft prompt by default recipe) and keep the best epoch."""
    from afpbench._util.devices import resolve_device
    from afpbench.train import TrainConfig, train

    # A beta given alone keeps the recipe's other one (TrainConfig.resolved merges them).
    betas = (beta1, beta2) if beta1 is not None or beta2 is not None else None
    cfg = TrainConfig(
        detector=detector, train=_paths(train_dirs), val=_paths(val_dirs), out=out, base=base, weights=weights, device=resolve_device(device), dtype=dtype,
        image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, betas=betas, scheduler=scheduler,
        warmup_steps=warmup_steps, mixed_precision=mixed_precision, seed=seed, limit=limit, num_workers=num_workers, threads=threads, resume=resume,
        stop_after_epochs=stop_after_epochs, quiet=quiet,
    )
    result = train(cfg)
    best = next((e for e in result.epochs if e.epoch == result.best_epoch), None)
    state = "done" if result.completed else f"stopped after epoch {result.epochs[-1].epoch if result.epochs else 0} (run again to resume)"
    val = f", val loss {best.val_loss:.4f}" if best and best.val_loss is not None else ""
    click.echo(f"{state}: best epoch {result.best_epoch}{val} -> {result.best_checkpoint}")
