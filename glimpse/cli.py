"""The `glimpse` command line.

Exit codes: 0 ok, 1 error, 2 usage, 3 another job holds the lock, 130 interrupted.
Every user-facing error is a search.errors.GlimpseError carrying its exit code;
:class:`LazyGroup` turns it into one ``error: …`` line (no traceback) for every command.
"""

from __future__ import annotations

import logging
import sys

import click

from glimpse.engine_options import engine_options
from glimpse.serve_options import HOST, PORT, THREADS
from glimpse.terminal import json_text
from search.errors import EXIT_ERROR, EXIT_INTERRUPTED, GlimpseError
from search.media.files import ShownLogArgs, shown

log = logging.getLogger("glimpse")


# Long runs whose INFO lines are their news off a terminal (cron mail, journald): progress, the version
# published, the model loaded. Every other command says only warnings unless asked (-v).
CHATTY_OFF_A_TERMINAL = {"index", "reindex", "serve", "duplicates"}


def _setup_logging(verbose: int, command: str | None) -> None:
    quiet = sys.stderr.isatty() or command not in CHATTY_OFF_A_TERMINAL  # on a terminal progress bars do
    level = logging.DEBUG if verbose > 1 else logging.INFO if (verbose or not quiet) else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("alembic", "PIL", "urllib3", "filelock", "huggingface_hub", "faiss.loader"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    for handler in logging.getLogger().handlers:
        handler.addFilter(ShownLogArgs())  # file names, captions and errors in a line: no terminal escapes
        if verbose < 2:
            # open_clip chats through the root logger itself (logging.info); quieting the root
            # logger's level would hide our own INFO lines too, so filter its records instead.
            handler.addFilter(lambda r: r.name != "root" or r.levelno >= logging.WARNING)


def _fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"error: {shown(message)}", err=True)
    sys.exit(code)


class LazyGroup(click.Group):
    """Subcommands from other packages, imported only when invoked (torch is slow to import).

    Also the one place where a GlimpseError from any command becomes its message and exit code.
    """

    lazy = {
        "train": "training.cli:train",
        "search": "glimpse.search_command:search",
        "duplicates": "glimpse.duplicates_cli:duplicates",
    }

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GlimpseError as exc:
            _fail(str(exc), exc.exit_code)

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            import importlib

            module, attr = self.lazy[name].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ImportError as exc:  # pragma: no cover - slim installs
                raise click.ClickException(f"`glimpse {name}` is unavailable: {exc}") from exc
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    default=None,
    metavar="DIR",
    help="Data directory (database, index, thumbnails). Default: $GLIMPSE_HOME or ~/.glimpse",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log lines on stderr: -v info, -vv debug. Default: warnings (index, reindex, serve off a terminal: info).",
)
@click.version_option(package_name="glimpse")
@click.pass_context
def cli(ctx: click.Context, home: str | None, verbose: int) -> None:
    """Glimpse: search your images by text or by example."""
    from search.paths import Paths
    from search.settings import settings

    _setup_logging(verbose, ctx.invoked_subcommand)
    settings()  # every GLIMPSE_* setting checked before any work: a bad one exits 2, naming it
    ctx.obj = Paths.resolve(home)


def model_options(f):
    f = click.option(
        "--quantize",
        type=click.Choice(["int8"]),
        default=None,
        help="CPU only: int8 image tower in ONNX Runtime (faster; vectors within cosine ~0.98 of "
        "float32, see BENCHMARKS.md). Same as GLIMPSE_QUANTIZE=int8.",
    )(f)
    f = click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: GPU when present).")(f)
    f = click.option(
        "--decode",
        type=click.Choice(["auto", "gpu", "cpu"]),
        default=None,
        help="Where JPEGs are decoded: auto (default; nvJPEG on the GPU when encoding on one), "
        "gpu, or cpu (PIL in the worker processes). Same as GLIMPSE_DECODE.",
    )(f)
    f = click.option(
        "--workers",
        type=int,
        default=None,
        help="Decode worker processes (default: on a CPU, as many as the decode share of the work "
        "needs, from the model's weight; on a GPU, all cores but one).",
    )(f)
    f = click.option("--batch-size", type=int, default=None, help="Images per encoder call (default 16 CPU, 256 GPU).")(
        f
    )
    f = click.option("--reembed", is_flag=True, help="Allow a model change: re-embed every image with the new model.")(
        f
    )
    f = click.option(
        "--pretrained",
        default=None,
        help="open_clip pretrained tag or checkpoint file ('none' = random weights, benchmarks only).",
    )(f)
    f = click.option(
        "--model",
        default=None,
        help="open_clip model name (default ViT-B-32 + laion2b_s34b_b79k) or local-dir:DIR. "
        "Default: the model the index was built with.",
    )(f)
    return f


def ocr_options(f):
    """Text inside images (indexer/ocr.py), read after the index is published."""
    f = click.option(
        "--ocr-budget",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="MINUTES",
        help="Stop reading text after this many minutes, newest images first; the next run carries on.",
    )(f)
    f = click.option("--reocr", is_flag=True, help="Read the text of every image again (not only new or changed).")(f)
    f = click.option(
        "--ocr/--no-ocr",
        default=None,
        help="Read the text inside images so that a word in them finds them (default: GLIMPSE_OCR, on).",
    )(f)
    return f


def _run_index(paths, roots, kind: str, **kw) -> None:
    from glimpse.engine_options import ENGINE_KEYS, make_runner
    from indexer.pipeline import Options, run_job

    engine = {k: kw.pop(k) for k in ENGINE_KEYS}
    opts = Options(kind=kind, **kw)
    runner = make_runner(opts, **engine)
    try:  # a GlimpseError reaches LazyGroup, which reports it
        counts, version = run_job(paths, roots, opts, runner=runner)
    except KeyboardInterrupt:
        _fail("interrupted; committed batches are kept and the next run resumes", EXIT_INTERRUPTED)
    parts = [
        f"{counts.scanned} files",
        f"{counts.new} new",
        f"{counts.changed} changed",
        f"{counts.moved} moved",
        f"{counts.deleted} deleted",
        f"{counts.failed} failed",
        f"{counts.embedded} embedded",
        f"{counts.captions} captions embedded",
    ]
    if counts.videos or counts.videos_failed or counts.videos_skipped:
        parts.append(
            f"{counts.videos} videos ({counts.frames} frames), {counts.videos_failed} videos failed, "
            f"{counts.videos_skipped} videos skipped"
        )
    click.echo(f"{kind}: " + ", ".join(parts) + f"; index version {version}")
    for root in counts.unavailable_roots:
        click.echo(f"warning: {shown(root)} is missing or unmounted; its images were kept", err=True)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(file_okay=False))
@click.option(
    "--captions",
    "captions",
    type=click.Path(dir_okay=False),
    default=None,
    help="Caption manifest: JSONL {path, caption} or CSV path,caption (paths relative to the file).",
)
@click.option(
    "--follow-external-links/--no-follow-external-links",
    default=None,
    help="Also index symlinked files and folders (and read sidecars) whose target lies outside the indexed "
    "folders; recorded with each folder and kept by `glimpse reindex` (default: as recorded, else no).",
)
@model_options
@engine_options
@ocr_options
@click.pass_obj
def index(paths_obj, paths, captions, follow_external_links, **kw):
    """Index image folders (and captions). Only new or changed files are embedded."""
    import os

    roots = list(paths)
    if not roots:
        if not captions:
            raise click.UsageError("give at least one folder, or --captions FILE (its folder is indexed)")
        roots = [os.path.dirname(os.path.abspath(captions))]
    for r in roots:
        if not os.path.isdir(r):
            _fail(f"not a folder: {r}")
    _run_index(paths_obj, roots, "index", captions=captions, follow_external_links=follow_external_links, **kw)


@cli.command()
@click.option(
    "--rebuild-index",
    is_flag=True,
    help="Rebuild the search index from scratch (retrain its clustering) instead of updating the live one.",
)
@model_options
@engine_options
@ocr_options
@click.pass_obj
def reindex(paths_obj, **kw):
    """Incremental update of every known folder (the nightly job)."""
    _run_index(paths_obj, None, "reindex", **kw)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--all-failed", is_flag=True, help="List every failed file, not just the first 50.")
@click.pass_obj
def stats(paths_obj, as_json, all_failed):
    """Counts, model, index version, failed files and recent jobs."""
    from search.engine import Engine

    engine = Engine(paths_obj)
    s = engine.stats(failed_limit=None if all_failed else 50)
    if as_json:  # the engine's dict as it is, the same as /api/stats
        click.echo(json_text(s))
        return
    model = s["model"] or {"name": "-", "pretrained": None}
    click.echo(f"home:           {paths_obj.home}")
    click.echo(f"model:          {model['name']}" + (f" ({model['pretrained']})" if model["pretrained"] else ""))
    click.echo(f"index version:  {s['index_version'] or '-'} ({s['index_type'] or '-'})")
    click.echo(f"images indexed: {s['images_indexed']} (embedded in the database)")
    frames = s.get("video_frames", 0)
    click.echo(
        f"in live index:  {s['images_in_live_index']}"
        + (f" (vectors: images and {frames} video frames)" if frames else "")
    )
    if s["images_in_live_index"] != s["images_indexed"] + frames:
        click.echo(
            "note:           the live index is behind the database: the last run did not publish; run `glimpse reindex`"
        )
    click.echo(f"images failed:  {s['images_failed']}")
    if s.get("videos_indexed") or s.get("videos_failed") or s.get("videos_skipped"):
        click.echo(
            f"videos:         {s['videos_indexed']} indexed ({s['video_frames']} frames), "
            f"{s['videos_failed']} failed, {s['videos_skipped']} without a video stream"
        )
    click.echo(f"captions:       {s['captions']}")
    ocr = s["ocr"]
    click.echo(
        f"text (OCR):     {ocr['read']} read, {ocr['with_text']} with text, {ocr['failed']} not readable, "
        f"{ocr['pending']} pending; {ocr['engine'] or 'RapidOCR not installed'}"
        + ("" if ocr["on"] else " (GLIMPSE_OCR=off)")
    )
    for root in s["roots"]:
        click.echo(
            f"root:           {shown(root['path'])}"
            + ("" if root["available"] else "  (unavailable)")
            + ("  (follows external links)" if root["follow_external_links"] else "")
            + ("  (follows folder links leading outside)" if root["follow_external_folder_links"] else "")
        )
    if s["failed"]:
        click.echo("failed files:")
        for f in s["failed"]:
            click.echo(f"  {shown(f['path'])}: {shown(f['error'])}")
    if s["jobs"]:
        click.echo("recent jobs:")
        for j in s["jobs"]:
            click.echo(
                f"  #{j['id']} {j['kind']} {j['started_at']} {j['outcome']}: {j['new']} new, {j['changed']} changed, "
                f"{j['moved']} moved, {j['deleted']} deleted, {j['failed']} failed -> {j['index_version'] or '-'}"
            )
            if j.get("videos") or j.get("videos_failed") or j.get("videos_skipped"):
                click.echo(
                    f"      videos: {j['videos']} indexed ({j['frames']} frames), {j['videos_failed']} failed, "
                    f"{j['videos_skipped']} skipped"
                )
            if j["ocr_read"]:
                click.echo(
                    f"      text read in {j['ocr_read']} images ({j['ocr_failed']} not readable) "
                    f"in {j['ocr_seconds'] or 0:.0f}s"
                )
            if j["message"]:
                click.echo(f"      {shown(j['message'].splitlines()[0])}")
            for line in j["warnings"]:
                click.echo(f"      warning: {shown(line)}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, type=HOST, help="IP address or host name to bind.")
@click.option("--port", default=5000, show_default=True, type=PORT, help="0: any free port.")
@click.option("--threads", default=8, show_default=True, type=THREADS, help="Server worker threads.")
@click.pass_obj
def serve(paths_obj, host, port, threads):
    """Serve the search page and JSON API (waitress)."""
    from web.server import serve as run_server

    run_server(paths_obj, host=host, port=port, threads=threads)


@cli.group()
def user():
    """Logins for `glimpse serve` (HTTP Basic). With none, the server is open to whoever reaches it."""


def _users_file(paths_obj):
    from search.settings import settings
    from web.users import users_path

    return users_path(paths_obj.home, settings())


@user.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin (scripts).")
@click.pass_obj
def user_add(paths_obj, name, password_stdin):
    """Add NAME, or give NAME a new password; a running server applies it at once."""
    from web import users

    path = _users_file(paths_obj)
    try:
        users.check_name(name)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        replaced = users.add(path, name, password)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror or exc}")
    if replaced:
        click.echo(f"user {name}: password replaced in {path}")
    else:
        click.echo(f"user {name} added to {path}; the server now asks for a login")


@user.command("list")
@click.pass_obj
def user_list(paths_obj):
    """List the user names (never the hashes)."""
    from web import users

    path = _users_file(paths_obj)
    try:
        found = users.load(path)
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}")
    for name in sorted(found.hashes):
        click.echo(name)
    if not found.required:
        click.echo(f"no users in {path}: the server asks for no login", err=True)


@user.command("remove")
@click.argument("name")
@click.pass_obj
def user_remove(paths_obj, name):
    """Remove NAME; when none is left the server is open again."""
    from web import users

    path = _users_file(paths_obj)
    try:
        removed = users.remove(path, name)
        left = users.load(path)
    except OSError as exc:
        _fail(f"cannot update {path}: {exc.strerror or exc}")
    if not removed:
        _fail(f"no user named {name!r} in {path}")
    click.echo(f"user {name} removed" + ("" if left.required else "; no users left: the server asks for no login"))


@cli.group()
def db():
    """Database schema commands."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(paths_obj):
    """Upgrade the schema to the newest migration."""
    from search.store.migrate import upgrade_to_head

    paths_obj.ensure()
    upgrade_to_head(paths_obj.db)
    click.echo(f"database {paths_obj.db} is at the newest schema")


def main() -> None:
    cli(prog_name="glimpse")


if __name__ == "__main__":
    main()
