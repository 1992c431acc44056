"""`glimpse duplicates`: near-duplicate groups in the live index, for a person to review (read-only)."""

from __future__ import annotations

import json
from typing import Any

import click

from search.errors import InvalidValue
from search.vectors.duplicates import DEFAULT_THRESHOLD, STAGES, check_threshold


class ThresholdType(click.types.FloatParamType):
    """A cosine similarity in (0, 1], NaN refused: a usage error (exit 2), checked before anything opens."""

    name = "threshold"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        try:
            return check_threshold(number)
        except InvalidValue as exc:
            self.fail(str(exc), param, ctx)


class StageBars:
    """The finder's progress (``search.vectors.duplicates.ProgressFn``) as a bar per stage on a terminal,
    else a log line every GLIMPSE_PROGRESS_EVERY seconds: a pass over a million images takes minutes."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar: Any = None  # tqdm, or indexer.progress.LogProgress
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        from indexer.progress import bar

        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar = bar(total, stage, "pair" if stage == STAGES[-1] else "img")
        if self.bar is not None and done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@click.command()
@click.option(
    "--threshold",
    type=ThresholdType(),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Candidates: cosine similarity in (0, 1] at or above which two images are checked pixel by pixel "
    "(the default is measured for the shipped model: README). The pixel check's own limit is "
    "GLIMPSE_DUPLICATES_MAX_DISTANCE.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"threshold": T, "max_distance": D, "without_print": N, "groups": [...]}.',
)
@click.pass_obj
def duplicates(paths_obj, threshold: float, as_json: bool) -> None:
    """Groups of near-duplicate images, largest group first; each group starts with the image to keep
    (most pixels, then largest file, then oldest), and every other image in it was verified against that one.

    Nothing is deleted: decide yourself what to keep.
    """
    import os

    import faiss

    from search.engine import Engine
    from search.media.files import shown
    from search.vectors.duplicates import max_distance

    engine = Engine(paths_obj)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # one batch job, not a query: use every core
    bars = StageBars()
    try:
        found = engine.duplicates(threshold, progress=bars)
    finally:
        bars.close()
    groups = found.groups
    if as_json:
        out = {
            "threshold": threshold,
            "max_distance": max_distance(),
            "without_print": found.without_print,
            "groups": [g.to_dict() for g in groups],
        }
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    if found.without_print:
        click.echo(
            f"note: {found.without_print} indexed images have no pixel print yet and were not checked "
            "(glimpse reindex stores them)",
            err=True,
        )
    if not groups:
        click.echo(f"no near-duplicates at threshold {threshold}", err=True)
    for n, group in enumerate(groups, start=1):
        head = f"group {n}: {len(group.images)} images, lowest cosine {group.min_score:.3f}"
        click.echo(f"{head}, verified by {group.verified_by}")
        for r, d in zip(group.images, group.distances):
            dims = f"{r.width}x{r.height}" if r.width else "?"
            mark = "keep" if r.id == group.keep else f"d={d:.2f}"
            click.echo(f"  {mark:>6}  {shown(r.path)}  {dims}  {r.size or 0} B  {(r.date or '')[:10]}")
