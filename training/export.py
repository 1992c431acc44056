"""Write a ``local-dir:`` model folder that open_clip loads unchanged.

open_clip's factory reads ``open_clip_config.json`` ({"model_cfg", "preprocess_cfg"})
and the first preferred weights file (``open_clip_model.safetensors``); the
tokenizer comes from ``model_cfg["text_cfg"]`` (SimpleTokenizer unless an HF
tokenizer is named). The model card travels with the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

WEIGHTS = "open_clip_model.safetensors"
CONFIG = "open_clip_config.json"


def write_local_dir(
    model: torch.nn.Module,
    model_cfg: dict,
    preprocess_cfg: dict,
    out: str | os.PathLike,
    card: str | None = None,
    fp16: bool = False,
) -> Path:
    """Save config + safetensors (+ README.md card); each file replaced atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else None
    state = {
        k: (v.detach().to("cpu", dtype=dtype if v.is_floating_point() else None)).contiguous().clone()
        for k, v in model.state_dict().items()
    }
    tmp = out / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / WEIGHTS)
    _write_text(out / CONFIG, json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2))
    if card is not None:
        _write_text(out / "README.md", card)
    return out


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fmt(block: dict | None) -> str:
    return " / ".join(f"{100 * v:.1f}" for v in (block or {}).values()) or "n/a"


def model_card(info: dict) -> str:
    """Markdown card: data, command, recall beside chance and pixels, training time."""
    m = info.get("metrics", {})
    lic = "\n".join(f"| {k} | {v} |" for k, v in sorted(info.get("licenses", {}).items())) or "| n/a | |"
    return f"""# {info.get("name", "glimpse model")}

Small CLIP-style model (open_clip `CLIP`, contrastive `ClipLoss`) trained by `glimpse train`.
Load it with `open_clip.create_model_and_transforms("local-dir:THIS_FOLDER")` and
`open_clip.get_tokenizer("local-dir:THIS_FOLDER")`, or `glimpse index --model local-dir:THIS_FOLDER`.

- Parameters: {info.get("params", 0) / 1e6:.2f} M; weights {info.get("dtype", "float32")}; image size {info.get("image_size")} px; embedding dim {info.get("embed_dim")}
- Trained for {info.get("steps", 0)} steps ({info.get("epochs", 0):.1f} epochs, batch {info.get("batch_size")}) in {info.get("train_minutes", 0):.1f} min on {info.get("device")}
- Checkpoint chosen at step {info.get("best_step")} (best t2i R@10 + i2i R@10 on validation)

## Command

```
{info.get("command", "")}
```

## Data

Manifest `{info.get("manifest")}`: {info.get("n_train")} training images ({info.get("n_train_groups")} concepts),
{info.get("n_val")} validation images ({info.get("n_val_groups")} concepts). The validation concepts were never
trained on{(", and the validation gallery is drawn in the style `" + info["val_style"] + "`, which was kept out of training entirely") if info.get("val_style") else ""}.

| licence of training images | images |
|---|---:|
{lic}

## Validation recall (R@1 / R@5 / R@10, %)

Gallery of {m.get("gallery")} images (one per held-out concept). Image → image: each gallery image is the
query and the same concept's {m.get("i2i_others", 0)} images in the other styles are the gallery (reverse direction in brackets).

| task | model | chance | raw-pixel cosine |
|---|---|---|---|
| text → image | {_fmt(m.get("t2i"))} | {_fmt(m.get("chance"))} | – |
| image → text | {_fmt(m.get("i2t"))} | {_fmt(m.get("chance"))} | – |
| image → image, across styles | {_fmt(m.get("i2i"))} ({_fmt(m.get("i2i_rev"))}) | {_fmt(m.get("i2i_chance"))} | raw {_fmt((info.get("pixel_baseline") or {}).get("raw"))}; mean-centred {_fmt((info.get("pixel_baseline") or {}).get("centred"))} |

## Limits

Trained on icons, emoji and clip art with short captions; it knows little about photographs and
nothing about words outside its training captions. Use a zoo model (e.g. ViT-B-32) for general photos.
{info.get("extra", "")}
"""


def curve_table(history: list[dict]) -> str:
    """Markdown table of the validation curve (R@10, %), one row per evaluation."""
    rows = [
        "| step | epoch | train min | loss | t2i R@10 | i2t R@10 | i2i R@10 | i2i rev R@10 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def r10(h: dict, k: str) -> str:
        return f"{100 * h[k]['R@10']:.1f}" if k in h else "–"

    for h in history:
        rows.append(
            f"| {h['step']} | {h['epoch']:.1f} | {h['minutes']:.0f} | {h['train_loss']:.3f} | "
            f"{r10(h, 't2i')} | {r10(h, 'i2t')} | {r10(h, 'i2i')} | {r10(h, 'i2i_rev')} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":  # python -m training.export training-runs/NAME/metrics.jsonl
    import sys

    print(curve_table([json.loads(line) for line in open(sys.argv[1])]))
