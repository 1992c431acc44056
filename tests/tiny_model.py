"""A tiny open_clip config with random weights, for tests.

Written as a ``local-dir:`` folder so it loads through open_clip's own
factory exactly like a real model does.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_tiny_model(folder: Path | str, seed: int = 0) -> Path:
    """Create (once) a random-weight tiny model folder and return it."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    weights = folder / "open_clip_model.safetensors"
    if weights.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CONFIG)
    config = {
        "model_cfg": TINY_CONFIG,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return folder
