"""`glimpse search`: the CLI's side of Engine.search, with the API's filters and limits.

Registered lazily by glimpse.cli.LazyGroup. Values follow search.query.args, the rules the API uses (one
limit and one message for k, page and dates on both). TEXT may begin with a dash (``glimpse search -cat``):
see :class:`TextMayStartWithDash`.
"""

from __future__ import annotations

import sys

import click

from glimpse.terminal import json_text
from search.errors import EXIT_ERROR
from search.media.files import shown
from search.query.args import MAX_PAGE_K, ORDERS
from search.query.kinds import MODES


class TextMayStartWithDash(click.Command):
    """A token that begins with one dash and is no option of this command is TEXT, not an unknown option.

    ``-k 5``, ``-k5`` and ``-h`` stay options; ``-cat`` or ``"-blurry photo"`` is text. Tokens that begin
    with ``--`` stay options (a mistyped ``--jsno`` is still an error); after ``--`` everything is text.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value: dict[str, bool] = {name: False for name in ctx.help_option_names}
        for param in self.params:
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    takes_value[name] = not (param.is_flag or param.count)
        options: list[str] = []
        text: list[str] = []
        tokens = iter(args)
        for token in tokens:
            if token == "--":
                text.extend(tokens)
                break
            attached = takes_value.get(token[:2], False) and token[2:].isdigit()  # -k5
            if (token.startswith("--") or token in takes_value or attached) and token != "-":
                options.append(token)
                value = next(tokens, None) if takes_value.get(token) else None
                if value is not None:  # an option's value, whatever it looks like (--min-score -0.1)
                    options.append(value)
            else:
                text.append(token)
        return super().parse_args(ctx, options + (["--", *text] if text else []))


def _fail(message: str) -> None:
    click.echo(f"error: {shown(message)}", err=True)
    sys.exit(EXIT_ERROR)


@click.command(cls=TextMayStartWithDash)
@click.argument("text", required=False)
@click.option("--image", "image", type=click.Path(dir_okay=False), help="Find images similar to this file.")
@click.option("--captions", "captions", metavar="TEXT", help="Search caption vectors; returns their images.")
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="auto",
    show_default=True,
    help="TEXT against: auto (image + file name/folder/caption words), images, captions (vectors), keywords.",
)
@click.option(
    "-k", "k", type=int, default=10, show_default=True, help=f"Results per page (1-{MAX_PAGE_K}, as the API)."
)
@click.option("--page", type=int, default=0, help="Page number (from 0); (page + 1) * k may not exceed 1000.")
@click.option(
    "--min-score",
    default=None,
    metavar="SCORE|auto",
    help="Drop results scoring below this cosine similarity; auto: below the index's relevance floor.",
)
@click.option("--folder", default=None, help="Only images in this folder or below it.")
@click.option("--date-from", default=None, metavar="YYYY-MM-DD", help="Only images dated on or after this day.")
@click.option("--date-to", default=None, metavar="YYYY-MM-DD", help="Only images dated on or before this day.")
@click.option(
    "--order",
    type=click.Choice(ORDERS),
    default="relevance",
    show_default=True,
    help="date: newest first within the relevant results.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, best first.")
@click.pass_obj
def search(paths_obj, text, image, captions, mode, k, page, min_score, folder, date_from, date_to, order, as_json):
    """Search by TEXT (combine terms: "2:beach + sunset - people"), --image FILE or --captions TEXT.

    TEXT may begin with a dash ("-cat"); after -- everything is TEXT.
    """
    from search.engine import Engine, Filters
    from search.media.decode import ImageDecodeError
    from search.query.args import check_date_range, check_paging, check_query_text, min_score_filter, parse_date
    from search.query.kinds import FileQuery, Paging, TextQuery
    from search.settings import settings
    from search.vectors.live import configure_query_threads

    given = [x for x in (text, image, captions) if x]
    if len(given) != 1:
        raise click.UsageError("give exactly one of TEXT, --image FILE or --captions TEXT")
    check_query_text(text or captions or "", "TEXT" if text else "--captions")
    check_paging(k, page)
    date_from, date_to = parse_date(date_from, "--date-from"), parse_date(date_to, "--date-to")
    check_date_range(date_from, date_to, ("--date-from", "--date-to"))
    floor = min_score_filter(min_score, "--min-score")  # the API's rule: a cosine in [-1, 1], or auto
    filters = Filters(folder=folder, date_from=date_from, date_to=date_to, order=order, **floor)
    try:
        conf = settings()
        configure_query_threads(conf)  # this process serves one query now
        engine = Engine(paths_obj, settings=conf)
        query: TextQuery | FileQuery
        if text:  # on the command line a term naming an image file is that image
            query = TextQuery(text, mode=mode, allow_files=True)
        elif image:
            query = FileQuery(image)
        else:
            query = TextQuery(captions, mode="captions")
        results = engine.search(query, filters, Paging(k=k, page=page)).results
    except ImageDecodeError as exc:
        _fail(f"{image}: {exc}")  # names the file; other GlimpseErrors reach LazyGroup
    except FileNotFoundError as exc:
        _fail(f"file not found: {exc.filename or exc}")
    if as_json:
        click.echo(json_text([r.to_dict() for r in results]))
        return
    if not results:
        click.echo("no results", err=True)
    for rank, r in enumerate(results, start=1 + page * k):
        cap = f"  {shown(r.caption)}" if r.caption else ""
        score = f"{r.score:.3f}" if r.score is not None else "  -  "  # keywords mode: no cosine score
        click.echo(f"{rank:3d}. {score}  {shown(r.path)}{cap}")
