"""`glimpse search` and `glimpse stats --json` keep the API's contract: the same filters, limits, messages and
stats fields; TEXT may begin with a dash; no log lines unless asked."""

from __future__ import annotations

import json

import pytest

from conftest import glimpse_cmd
from web_support import corpus, engine  # noqa: F401 - module-scoped fixtures


@pytest.fixture(scope="module")
def client(engine):
    from web.app import create_app

    return create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None}).test_client()


@pytest.fixture(scope="module")
def cli(corpus):
    def run(*args, check=True):
        return glimpse_cmd(*args, home=corpus.home, check=check)

    return run


def test_filters_and_order_match_the_api(cli, client, corpus):
    folder = str(corpus.folder("city")) + "/"
    args = {"q": "tall buildings", "folder": folder.rstrip("/"), "date_from": "2023-01-03", "order": "date", "k": 5}
    api = client.get("/api/search", query_string=args).get_json()["results"]
    out = cli(
        "search", "tall buildings", "--folder", folder, "--date-from", "2023-01-03", "--order", "date", "-k", "5",
        "--json",
    )  # fmt: skip
    got = json.loads(out.stdout)
    assert [r["id"] for r in got] == [r["id"] for r in api] and len(got) == 5
    assert all(r["path"].startswith(folder) and r["date"][:10] >= "2023-01-03" for r in got)
    assert [r["date"] for r in got] == sorted((r["date"] for r in got), reverse=True)
    to = json.loads(cli("search", "beach", "--date-to", "2020-06-03", "-k", "50", "--json").stdout)
    assert to and all(r["date"][:10] <= "2020-06-03" for r in to)


DATE = "must be a date like 2024-05-31"
DEEP = "page too deep: at most 1000 results can be paged through"
SCORE = "must be a number or auto: a cosine similarity between -1 and 1"


@pytest.mark.parametrize(
    ("cli_args", "api_args", "cli_message", "api_message"),
    [
        (["-k", "201"], {"k": "201"}, "k must be between 1 and 200", None),
        (["-k", "1000"], {"k": "1000"}, "k must be between 1 and 200", None),
        (["-k", "200", "--page", "5"], {"k": "200", "page": "5"}, DEEP, None),
        (["--date-from", "2024-13-01"], {"date_from": "2024-13-01"}, f"--date-from {DATE}", f"date_from {DATE}"),
        (["--date-to", "yesterday"], {"date_to": "yesterday"}, f"--date-to {DATE}", f"date_to {DATE}"),
        (["--date-from", "2024-02-01", "--date-to", "2024-01-01"], {"date_from": "2024-02-01", "date_to": "2024-01-01"},
         "--date-from is after --date-to", "date_from is after date_to"),
        # One rule for min_score (search.query.args.min_score_filter): the CLI took any number before.
        (["--min-score", "7"], {"min_score": "7"}, f"--min-score {SCORE} (got '7')", f"min_score {SCORE} (got '7')"),
        (["--min-score", "nan"], {"min_score": "nan"}, f"--min-score {SCORE} (got 'nan')",
         f"min_score {SCORE} (got 'nan')"),
        (["--min-score", "lots"], {"min_score": "lots"}, f"--min-score {SCORE} (got 'lots')",
         f"min_score {SCORE} (got 'lots')"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_as_the_api_refuses_them(cli, client, cli_args, api_args, cli_message, api_message):
    proc = cli("search", "beach", *cli_args, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"error: {cli_message}\n")
    resp = client.get("/api/search", query_string={"q": "beach", **api_args})
    assert resp.status_code == 400 and resp.get_json()["error"] == (api_message or cli_message)


def test_text_may_start_with_a_dash(cli):
    plain = json.loads(cli("search", "-cat", "--json").stdout)
    assert len(plain) == 10
    three = json.loads(cli("search", "-k", "3", "-cat", "--json").stdout)
    assert [r["id"] for r in three] == [r["id"] for r in plain[:3]]
    assert json.loads(cli("search", "-k3", "--json", "--", "--cat").stdout)
    assert json.loads(cli("search", "-blurry photo", "--min-score", "-1", "--json").stdout)
    typo = cli("search", "cat", "--jsno", check=False)  # a mistyped long option is still an error
    assert typo.returncode == 2 and "No such option '--jsno'" in typo.stderr


def test_search_logs_nothing_unless_asked(cli):
    proc = cli("search", "beach")
    assert proc.stdout.count("\n") == 10
    assert proc.stderr == ""
    loud = cli("-v", "search", "beach")
    assert " INFO " in loud.stderr and " DEBUG " not in loud.stderr


def test_stats_json_is_the_api_stats(cli, client):
    from_cli = json.loads(cli("stats", "--json").stdout)
    from_api = client.get("/api/stats").get_json()
    assert from_cli == from_api
    assert set(from_cli["model"]) == {"name", "pretrained", "fingerprint", "dim"}
    assert "model:          local-dir:" in cli("stats").stdout  # the text form still names it in one line
