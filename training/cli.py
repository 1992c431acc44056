"""``glimpse train``: contrastive training on a caption manifest (click command)."""

from __future__ import annotations

import shlex
import signal
import sys

import click

from .loop import PRESETS, TrainOptions
from .loop import train as run_training


def _sigterm(*_):
    raise KeyboardInterrupt  # same path as Ctrl-C: checkpoint, then exit


@click.command("train")
@click.option(
    "--captions",
    "captions",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSONL ({path, caption|captions[, group, style]}) or CSV (path,caption) manifest.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="local-dir: folder to write.")
@click.option("--from", "model_from", help="Fine-tune: zoo model name or local-dir:DIR.")
@click.option("--pretrained", help="Zoo tag or checkpoint file for --from.")
@click.option("--config", help=f"Train from scratch: {', '.join(PRESETS)}, an open_clip config name, or JSON.")
@click.option("--image-size", type=int, help="Override the config's image size.")
@click.option("--epochs", type=float, help="Stop after this many epochs.")
@click.option("--minutes", type=float, help="Stop after this much training time (the LR schedule follows it).")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--weight-decay", type=float, default=0.1, show_default=True)
@click.option("--warmup-steps", type=int, default=200, show_default=True)
@click.option("--augment", type=float, default=1.0, show_default=True, help="Augmentation strength, 0 = off.")
@click.option("--val-fraction", type=float, default=0.25, show_default=True, help="Share of concepts held out.")
@click.option("--val-style", help="Hold this style out of training; validate on it (needs 'style' in the manifest).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-minutes", type=float, default=5.0, show_default=True)
@click.option("--eval-every", type=int, help="Evaluate every N steps (instead of --eval-minutes).")
@click.option("--ckpt-minutes", type=float, default=3.0, show_default=True)
@click.option("--work", type=click.Path(file_okay=False), help="Checkpoints/logs [training-runs/<out name>].")
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads for torch.")
@click.option("--device", help="cpu, cuda, cuda:1 … [cuda when available].")
@click.option(
    "--text-teacher",
    help="Frozen sentence encoder to learn text from (a Hugging Face folder, or "
    "all-MiniLM-L6-v2); needs the train extra: pip install -e '.[train]'. embed_dim follows it.",
)
@click.option("--distill", type=float, default=1.0, show_default=True, help="Weight of the teacher-imitation loss.")
@click.option("--fp16", is_flag=True, help="Store exported weights as float16 (half the size).")
def train(**kw) -> None:
    """Train (or fine-tune) an open_clip model with ClipLoss; rerun to resume."""
    if not kw["model_from"] and not kw["config"]:
        kw["config"] = "glimpse-icons-small"
    if kw["model_from"] and kw["config"]:
        raise click.UsageError("--from and --config are exclusive")
    if not (kw["epochs"] or kw["minutes"]):
        raise click.UsageError("give --epochs and/or --minutes")
    kw["command"] = "glimpse train " + shlex.join(sys.argv[1:])
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        result = run_training(TrainOptions(**kw))
    except KeyboardInterrupt:
        sys.exit(130)
    best = result["best"] or {}
    click.echo(f"best at step {best.get('step')}: t2i {best.get('t2i')} i2i {best.get('i2i')} -> {kw['out']}")


if __name__ == "__main__":
    train()
