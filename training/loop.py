"""The training loop: open_clip model + ClipLoss, evaluation, checkpoint/resume.

State lives in a work folder (``checkpoint.pt``, ``metrics.jsonl``); the best
model so far is exported to the output ``local-dir:`` folder at every
evaluation, so a run cut short still leaves a usable model behind.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss
from tqdm import tqdm

from search.errors import InvalidValue

from . import export
from .augment import augment, to_tensor
from .data import CaptionTable, pixel_cache, read_manifest, split_by_concept
from .evaluate import EvalSet, evaluate, pixel_baseline

# Small from-scratch configs, chosen by measurement (see TRAINING.md).
PRESETS: dict[str, dict] = {
    "glimpse-icons-small": {
        "embed_dim": 256,
        "vision_cfg": {"image_size": 48, "patch_size": 8, "width": 128, "layers": 4, "head_width": 64},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
    },
    # For --text-teacher: embed_dim follows the teacher (384 for all-MiniLM-L6-v2); a wider,
    # deeper text tower than glimpse-icons-small, because it has to imitate a 6-layer BERT.
    "glimpse-icons-distil": {
        "embed_dim": 384,
        "vision_cfg": {"image_size": 48, "patch_size": 8, "width": 128, "layers": 4, "head_width": 64},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 4},
    },
    "glimpse-icons-tiny": {  # for tests
        "embed_dim": 64,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
}
# Icons are mostly square; pad (white) rather than crop, so wide clip art keeps its edges.
DEFAULT_PREPROCESS = {"resize_mode": "longest", "fill_color": 255, "interpolation": "bicubic"}


@dataclass
class TrainOptions:
    captions: str
    out: str
    work: str | None = None
    model_from: str | None = None  # zoo name, "local-dir:DIR"
    pretrained: str | None = None  # zoo tag or checkpoint file for model_from
    config: str | None = None  # preset / open_clip config name / JSON file / JSON text
    image_size: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 200
    augment: float = 1.0
    val_fraction: float = 0.25
    val_style: str | None = None
    seed: int = 0
    eval_minutes: float = 5.0
    eval_every: int | None = None  # steps; overrides eval_minutes
    ckpt_minutes: float = 3.0
    threads: int | None = 1
    device: str | None = None
    fp16: bool = False
    text_teacher: str | None = None  # folder or alias of a frozen sentence encoder (see teacher.py)
    distill: float = 1.0  # weight of the student-text <-> teacher loss
    command: str = field(default_factory=lambda: " ".join(shlex.quote(a) for a in sys.argv))


def _percents(d: dict) -> str:
    """Recall values as percentages, slash-separated (the eval log line)."""
    return "/".join(f"{100 * v:.1f}" for v in d.values())


def resolve_config(config: str) -> dict:
    """Preset name, open_clip built-in name, JSON file path or inline JSON -> model_cfg."""
    if config in PRESETS:
        return json.loads(json.dumps(PRESETS[config]))
    cfg = open_clip.get_model_config(config)
    if cfg is not None:
        return cfg
    text = Path(config).read_text() if os.path.isfile(config) else config
    cfg = json.loads(text)
    return cfg.get("model_cfg", cfg)


def build_model(opts: TrainOptions, work: Path, embed_dim: int | None = None):
    """Model, model_cfg, preprocess_cfg and tokenizer, all through open_clip's factory."""
    if opts.model_from:
        cfg = open_clip.get_model_config(opts.model_from)
        if cfg is None:
            raise InvalidValue(f"unknown model {opts.model_from!r}")
        model = open_clip.create_model(opts.model_from, pretrained=opts.pretrained, force_image_size=opts.image_size)
        pre = dict(open_clip.get_model_preprocess_cfg(model))
        tokenizer = open_clip.get_tokenizer(opts.model_from)
    else:
        cfg = resolve_config(opts.config or "glimpse-icons-small")
        if embed_dim:
            cfg["embed_dim"] = embed_dim
        pre = dict(DEFAULT_PREPROCESS)
        if opts.image_size:
            cfg["vision_cfg"]["image_size"] = opts.image_size
        # Build through a weightless local-dir: the exact path `glimpse index` takes.
        spec = work / "spec"
        spec.mkdir(parents=True, exist_ok=True)
        (spec / export.CONFIG).write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": pre}))
        model = open_clip.create_model(f"local-dir:{spec}")
        pre = dict(open_clip.get_model_preprocess_cfg(model))
        tokenizer = open_clip.get_tokenizer(f"local-dir:{spec}")
    if opts.image_size:
        cfg["vision_cfg"]["image_size"] = opts.image_size
    pre["size"] = cfg["vision_cfg"]["image_size"]
    for k in ("mean", "std"):
        pre[k] = list(pre.get(k) or (open_clip.OPENAI_DATASET_MEAN if k == "mean" else open_clip.OPENAI_DATASET_STD))
    return model, cfg, pre, tokenizer


def _lr(opts: TrainOptions, step: int, progress: float) -> float:
    if step < opts.warmup_steps:
        return opts.lr * (step + 1) / opts.warmup_steps
    return opts.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _save(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(opts: TrainOptions, on_step=None) -> dict:
    """Run (or resume) training; returns the best validation metrics.

    ``on_step(step, loss)`` is called after every optimiser step (tests use it
    to simulate an interruption). Ctrl-C / SIGTERM save a checkpoint first.
    """
    if not (opts.epochs or opts.minutes):
        raise InvalidValue("give --epochs and/or --minutes")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    work = Path(opts.work or Path("training-runs") / Path(opts.out).name)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"
    resume = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    if resume:  # the run's own settings win, except how long to go on for
        saved = resume["options"]
        for k in ("epochs", "minutes", "eval_minutes", "eval_every", "ckpt_minutes", "threads", "device"):
            saved[k] = getattr(opts, k)
        opts = TrainOptions(**saved)
    torch.manual_seed(opts.seed)

    teacher = None
    if opts.text_teacher:
        from .teacher import TextTeacher

        teacher = TextTeacher(opts.text_teacher)
    model, cfg, pre, tokenizer = build_model(opts, work, teacher.dim if teacher and not opts.model_from else None)
    if teacher and cfg.get("embed_dim") != teacher.dim:
        raise InvalidValue(
            f"--text-teacher gives {teacher.dim}-d embeddings but the model's embed_dim is {cfg.get('embed_dim')}"
        )
    model.to(device).train()
    size = cfg["vision_cfg"]["image_size"]
    size = size if isinstance(size, int) else size[0]

    records = read_manifest(opts.captions)
    train_recs, val_recs = split_by_concept(records, opts.val_fraction, opts.val_style, opts.seed)
    if len(train_recs) < 2 or not val_recs:
        raise InvalidValue(f"too few records to train: {len(train_recs)} train, {len(val_recs)} validation")
    cache = work.parent / "cache"  # shared by runs at the same resolution
    tr_pix = pixel_cache(
        train_recs, size, cache, {k: pre[k] for k in ("resize_mode", "fill_color", "interpolation") if k in pre}
    )
    va_pix = pixel_cache(
        val_recs, size, cache, {k: pre[k] for k in ("resize_mode", "fill_color", "interpolation") if k in pre}
    )
    tr_pix = np.ascontiguousarray(tr_pix)
    tr_caps, va_caps = CaptionTable(train_recs, tokenizer), CaptionTable(val_recs, tokenizer)
    es = EvalSet.build(val_recs, opts.val_style)
    tr_teach = va_teach = None
    if teacher:
        from .teacher import cached_embeddings

        tr_teach = torch.from_numpy(cached_embeddings(teacher, tr_caps.texts, cache))
        # Diagnostic only (never trained on): the image tower against the teacher's text, i.e. the
        # text->image recall a perfectly distilled student would reach.
        va_teach = teacher.embed([val_recs[i].captions[0] for i in es.gallery])
        del teacher
    pix_base = pixel_baseline(es, va_pix)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opts.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=opts.lr
    )
    loss_fn = ClipLoss()
    n = len(train_recs)
    bs = min(opts.batch_size, n)
    steps_per_epoch = n // bs
    total_steps = int(opts.epochs * steps_per_epoch) if opts.epochs else None
    st: dict[str, Any] = {"step": 0, "elapsed": 0.0, "best": None, "best_score": -1.0, "history": []}
    gen = torch.Generator().manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    if resume:
        model.load_state_dict(resume["model"])
        optim.load_state_dict(resume["optim"])
        st = resume["state"]
        gen.set_state(resume["torch_gen"])
        rng.bit_generator.state = resume["np_rng"]
        tqdm.write(f"resumed from {ckpt_path} at step {st['step']} ({st['elapsed'] / 60:.1f} min trained)")

    info = {
        "name": Path(opts.out).name,
        "command": opts.command,
        "manifest": opts.captions,
        "n_train": n,
        "n_val": len(val_recs),
        "n_train_groups": len({r.group for r in train_recs}),
        "n_val_groups": len({r.group for r in val_recs}),
        "val_style": opts.val_style,
        "licenses": dict(Counter(str(r.meta.get("license", "unspecified")).split(" (")[0] for r in train_recs)),
        "params": sum(p.numel() for p in model.parameters()),
        "image_size": size,
        "embed_dim": cfg.get("embed_dim"),
        "batch_size": bs,
        "device": str(device),
        "dtype": "float16" if opts.fp16 else "float32",
        "pixel_baseline": pix_base,
    }
    tqdm.write(
        f"train {n} images / {info['n_train_groups']} concepts, val {len(val_recs)} / "
        f"{info['n_val_groups']}; gallery {len(es.gallery)}, other-style images {len(es.others)}; "
        f"{info['params'] / 1e6:.2f}M params on {device}; pixel i2i baseline {pix_base}"
    )

    def progress() -> float:
        p = 0.0
        if total_steps:
            p = max(p, st["step"] / max(1, total_steps))
        if opts.minutes:
            p = max(p, st["elapsed"] / (opts.minutes * 60))
        return p

    def checkpoint() -> None:
        _save(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optim": optim.state_dict(),
                "state": st,
                "torch_gen": gen.get_state(),
                "np_rng": rng.bit_generator.state,
                "options": asdict(opts),
            },
        )

    def do_eval(train_loss: float) -> None:
        t0 = time.time()
        m = evaluate(
            model,
            es,
            va_pix,
            va_caps.primary(np.arange(len(val_recs))),
            pre["mean"],
            pre["std"],
            device,
            teacher_text=va_teach,
        )
        rec = {
            "step": st["step"],
            "epoch": st["step"] / max(1, steps_per_epoch),
            "minutes": st["elapsed"] / 60,
            "train_loss": train_loss,
            "lr": optim.param_groups[0]["lr"],
            "logit_scale": model.logit_scale.exp().item(),
            **m,
        }
        st["history"].append(rec)
        with open(work / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        score = m["t2i"]["R@10"] + m.get("i2i", {}).get("R@10", 0.0)
        tqdm.write(
            f"[eval step {st['step']} ep {rec['epoch']:.1f} {rec['minutes']:.1f}min] loss {train_loss:.3f} "
            f"t2i {_percents(m['t2i'])} i2t {_percents(m['i2t'])} (chance {_percents(m['chance'])})"
            + (
                f" i2i {_percents(m['i2i'])} (chance {_percents(m['i2i_chance'])}, pixels "
                f"{' '.join(_percents(v) for v in pix_base.values())}) i2i_rev {_percents(m['i2i_rev'])}"
                if "i2i" in m
                else ""
            )
            + (f" t2i_teacher {_percents(m['t2i_teacher'])}" if "t2i_teacher" in m else "")
            + f"  [{time.time() - t0:.0f}s]"
        )
        if score > st["best_score"]:
            st["best_score"], st["best"] = score, rec
            write_model(m, rec)

    def write_model(m: dict, rec: dict) -> None:
        card = dict(
            info, metrics=m, steps=rec["step"], epochs=rec["epoch"], train_minutes=rec["minutes"], best_step=rec["step"]
        )
        export.write_local_dir(model, cfg, pre, opts.out, export.model_card(card), fp16=opts.fp16)
        (Path(opts.out) / "training_metrics.json").write_text(json.dumps({"best": rec, "info": info}, indent=1))

    def finished() -> bool:
        return progress() >= 1.0

    mean = torch.tensor(pre["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"], device=device).view(1, 3, 1, 1)
    last_eval_step, last_eval_t, last_ckpt_t = st["step"], st["elapsed"], st["elapsed"]
    losses: list[float] = []
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    bar = tqdm(total=total_steps, initial=st["step"], unit="step", mininterval=5, dynamic_ncols=True)
    try:
        while not finished():
            t0 = time.time()
            step = st["step"]
            epoch, pos = divmod(step, steps_per_epoch)
            perm = np.random.default_rng([opts.seed, epoch]).permutation(n)
            idx = np.sort(perm[pos * bs : (pos + 1) * bs])
            x = to_tensor(tr_pix[idx], (0, 0, 0), (1, 1, 1), device)
            x = (augment(x, gen, opts.augment) - mean) / std
            rows = tr_caps.sample_rows(idx, rng)
            tokens = tr_caps.tokens[rows].to(device)
            for g in optim.param_groups:
                g["lr"] = _lr(opts, step, progress())
            with autocast:
                img_f = model.encode_image(x, normalize=True)
                txt_f = model.encode_text(tokens, normalize=True)
                scale = model.logit_scale.exp()
                if tr_teach is None:
                    loss = loss_fn(img_f, txt_f, scale)
                else:
                    # Images learn the teacher's space (its geometry generalises to unseen words); the
                    # student text tower learns to imitate the teacher (contrastive, so the whole batch's
                    # geometry, plus cosine for the absolute position) and to match images directly.
                    t_f = tr_teach[torch.as_tensor(rows)].to(device)
                    loss = (
                        loss_fn(img_f, t_f, scale)
                        + 0.5 * loss_fn(img_f, txt_f, scale)
                        + opts.distill * (loss_fn(txt_f, t_f, scale) + (1 - (txt_f * t_f).sum(-1)).mean() * 10)
                    )
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            st["step"] += 1
            # A step that took far longer than usual was paused (SIGSTOP by a benchmark, a suspended
            # laptop): count a typical step, so pauses neither eat --minutes nor advance the LR schedule.
            dt = time.time() - t0
            typical = st["elapsed"] / (st["step"] - 1) if st["step"] > 1 else dt
            st["elapsed"] += min(dt, 10 * typical) if st["step"] > 10 else dt
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", ep=f"{st['step'] / steps_per_epoch:.1f}", refresh=False)
            if on_step:
                on_step(st["step"], losses[-1])
            due = (
                (st["step"] - last_eval_step >= opts.eval_every)
                if opts.eval_every
                else (st["elapsed"] - last_eval_t >= opts.eval_minutes * 60)
            )
            if due or finished():
                do_eval(float(np.mean(losses)) if losses else float("nan"))
                losses.clear()
                last_eval_step, last_eval_t = st["step"], st["elapsed"]
                checkpoint()
                last_ckpt_t = st["elapsed"]
            elif st["elapsed"] - last_ckpt_t >= opts.ckpt_minutes * 60:
                checkpoint()
                last_ckpt_t = st["elapsed"]
    except KeyboardInterrupt:
        checkpoint()
        tqdm.write(f"interrupted: checkpoint saved at step {st['step']}; rerun the same command to resume")
        raise
    finally:
        bar.close()
    return {"best": st["best"], "history": st["history"], "pixel_baseline": pix_base, "info": info}
