"""`glimpse duplicates`: near-duplicate groups in the live index, for a person to review (read-only)."""

from __future__ import annotations

import json

import click

from search.duplicates import DEFAULT_THRESHOLD


@click.command()
@click.option(
    "--threshold",
    type=float,
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Cosine similarity in (0, 1] at or above which two images are near-duplicates "
    "(the default is measured for the shipped model: README).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"threshold": T, "groups": [...]}.')
@click.pass_obj
def duplicates(paths_obj, threshold: float, as_json: bool) -> None:
    """Groups of near-duplicate images, largest group first; each group largest (pixels) then newest first.

    Nothing is deleted: decide yourself what to keep.
    """
    import os

    import faiss

    from search.duplicates import check_threshold
    from search.engine import Engine

    threshold = check_threshold(threshold)  # before opening anything; a bad value exits 1 with one line
    engine = Engine(paths_obj)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # one batch job, not a query: use every core
    groups = engine.duplicates(threshold)
    if as_json:
        out = {"threshold": threshold, "groups": [g.to_dict() for g in groups]}
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    if not groups:
        click.echo(f"no near-duplicates at threshold {threshold}", err=True)
    for n, group in enumerate(groups, start=1):
        click.echo(f"group {n}: {len(group.images)} images, weakest link {group.min_score:.3f}")
        for r in group.images:
            dims = f"{r.width}x{r.height}" if r.width else "?"
            click.echo(f"  {r.path}  {dims}  {r.size or 0} B  {(r.date or '')[:10]}")
