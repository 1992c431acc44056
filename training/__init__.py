"""Contrastive training of small open_clip models on image-caption manifests.

Modules: data (manifest, concept split, decoded-pixel cache), augment (batch
augmentation on cached pixels), evaluate (recall@k beside chance and a
raw-pixel baseline), loop (ClipLoss training with checkpoint/resume),
export (local-dir folder + model card), cli (the ``glimpse train`` command).
"""
