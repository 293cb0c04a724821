"""The CSV source stays inside SCANSTREAM_CSV_ROOT: what a request names is refused with a
`422` when it can be told then, and a read that meets an escape fails the attempt with a
clear error; nothing outside the root is ever read, and no answer shows the root's path.

Real files, symlinks and FIFOs under pytest's tmp_path; a real API and real workers.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scanstream.api import create_app
from scanstream.errors import InvalidRequest
from scanstream.market import (
    CsvMarket,
    MarketDataError,
    MarketParams,
    SyntheticMarket,
    parse_params,
    write_csv,
)
from scanstream.settings import CsvSettings, Settings
from scanstream.strategies import builtin_strategies
from tests.support.api_events import auth
from tests.support.http import serve
from tests.support.scans import workers_running

# In every outside file, in a cell that a parser would quote back in its error.
SECRET = "OUTSIDE-SECRET-3b1f"
OUTSIDE_CSV = f"ts,open,high,low,close,volume\n1,1,1,1,{SECRET},1\n"
CAP = 20_000  # SCANSTREAM_CSV_MAX_FILE_BYTES in these tests: 60 bars fit, 500 do not


@dataclass(frozen=True)
class Tree:
    root: Path
    outside: Path

    @property
    def csv(self) -> CsvSettings:
        return CsvSettings(root=str(self.root), max_file_bytes=CAP)

    def secrets(self) -> tuple[str, ...]:
        """What no answer may contain: outside contents, and where the root and its
        neighbour really are."""
        return (SECRET, str(self.root), str(self.outside), str(self.root.parent))


def market(bars: int) -> SyntheticMarket:
    return SyntheticMarket(MarketParams(symbols=("AAA",), venues=("v",), bars=bars))


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A CSV root with good folders and every kind of escape, beside an outside folder."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "v").mkdir(parents=True)
    (outside / "v" / "AAA.csv").write_text(OUTSIDE_CSV)
    (outside / "AAA.csv").write_text(OUTSIDE_CSV)
    root.mkdir()
    write_csv(market(60), root / "good")
    # inside the root: followed
    (root / "latest").symlink_to("good")
    (root / "abs-latest").symlink_to(root / "good")
    (root / "shared").mkdir()
    (root / "shared" / "v").symlink_to("../good/v")
    # escapes of csv_dir itself
    (root / "escape").symlink_to("../outside")
    (root / "escape-abs").symlink_to(outside)
    (root / "sneaky").symlink_to("good/../../outside")
    (root / "loop").symlink_to("loop")
    os.mkfifo(root / "fifo")
    # escapes only a read finds: inside a folder that a request may name
    (root / "venue-link").mkdir()
    (root / "venue-link" / "v").symlink_to(outside / "v")
    (root / "file-link" / "v").mkdir(parents=True)
    (root / "file-link" / "v" / "AAA.csv").symlink_to("../../../outside/v/AAA.csv")
    (root / "file-loop" / "v").mkdir(parents=True)
    (root / "file-loop" / "v" / "AAA.csv").symlink_to("AAA.csv")
    (root / "file-fifo" / "v").mkdir(parents=True)
    os.mkfifo(root / "file-fifo" / "v" / "AAA.csv")
    write_csv(market(500), root / "big")
    return Tree(root, outside)


def load(tree: Tree, csv_dir: str, cap: int = CAP) -> Any:
    """The market of `csv_dir` as a worker loads it, files capped at `cap` bytes."""
    csv = CsvSettings(root=str(tree.root), max_file_bytes=cap)
    return CsvMarket(parse_params({"source": "csv", "csv_dir": csv_dir}, csv_settings=csv), csv)


REFUSED_AT_REQUEST = [
    ("../outside", "must not contain '..'"),
    ("good/../../outside", "must not contain '..'"),
    ("{outside}", "not an absolute path"),
    ("{root}/good", "not an absolute path"),
    ("escape", "escape: leads outside the CSV root"),
    ("escape-abs", "escape-abs: leads outside the CSV root"),
    ("escape/v", "escape/v: leads outside the CSV root"),
    ("sneaky", "sneaky: leads outside the CSV root"),
    ("loop", "loop: is a symlink loop"),
    ("fifo", "fifo: is not a folder"),
    ("good/v/AAA.csv", "good/v/AAA.csv: is not a folder"),
    ("missing", "missing: does not exist"),
    ("good\x00", "must not contain a NUL byte"),
    ("x" * 1000, "has a name longer than 255 bytes"),
    ("a/" * 501, "length <= 1000"),  # msgspec's own length limit
]
FAILED_AT_READ = [
    ("venue-link", "venue-link/v: leads outside the CSV root"),
    ("file-link", "file-link/v/AAA.csv: leads outside the CSV root"),
    ("file-loop", "file-loop/v/AAA.csv: is a symlink loop"),
    ("file-fifo", "file-fifo/v/AAA.csv: not a regular file"),
    ("big", "over the limit of 20,000 bytes per file (SCANSTREAM_CSV_MAX_FILE_BYTES)"),
]


def spelled(csv_dir: str, tree: Tree) -> str:
    return csv_dir.format(root=tree.root, outside=tree.outside)


# -- params and loading, in process ------------------------------------------------------


@pytest.mark.parametrize(("csv_dir", "problem"), REFUSED_AT_REQUEST)
def test_a_csv_dir_that_escapes_is_refused_naming_the_problem(
    tree: Tree, csv_dir: str, problem: str
) -> None:
    """Given a csv_dir that leaves the root, loops, is no folder or is malformed, when the
    params are checked, then params.csv_dir is named with the problem, and no outside path."""
    with pytest.raises(InvalidRequest) as info:
        parse_params({"source": "csv", "csv_dir": spelled(csv_dir, tree)}, csv_settings=tree.csv)
    assert info.value.field == "params.csv_dir"
    assert info.value.detail.startswith("params.csv_dir: ") and problem in info.value.detail
    assert not any(s in info.value.detail for s in tree.secrets())


@pytest.mark.parametrize(
    ("csv_dir", "kept"),
    [("good", "good"), ("./good/", "good"), ("latest", "latest"), ("abs-latest", "abs-latest"),
     ("shared", "shared")],
)  # fmt: skip
def test_symlinks_that_stay_inside_the_root_are_followed(
    tree: Tree, csv_dir: str, kept: str
) -> None:
    """Given a folder reached through symlinks that stay in the root, when loaded, then it
    reads as the folder itself, and the params keep the path as written (tidied)."""
    loaded = load(tree, csv_dir)
    assert loaded.symbols == ["AAA"] and loaded.bars("AAA") == market(60).bars("AAA")
    assert loaded.fingerprint() == load(tree, "good").fingerprint()
    assert loaded.params.csv_dir == kept


@pytest.mark.parametrize(("csv_dir", "problem"), FAILED_AT_READ)
def test_an_escape_inside_the_folder_fails_the_read_naming_the_file(
    tree: Tree, csv_dir: str, problem: str
) -> None:
    """Given a folder whose venue or file leads outside, loops, is a FIFO or is over the
    cap, when it is read, then the error names that file relative to the root."""
    with pytest.raises(MarketDataError) as info:
        load(tree, csv_dir)
    assert problem in str(info.value)
    assert not any(s in str(info.value) for s in tree.secrets())


def test_a_file_over_the_cap_is_refused_naming_the_cap(tree: Tree) -> None:
    """Given a file larger than SCANSTREAM_CSV_MAX_FILE_BYTES, when read, then the error
    gives its size, the cap and the setting's name; with a larger cap it loads."""
    with pytest.raises(MarketDataError) as info:
        load(tree, "big")
    size = (tree.root / "big" / "v" / "AAA.csv").stat().st_size
    assert str(info.value) == (
        f"big/v/AAA.csv: {size:,} bytes, over the limit of {CAP:,} bytes per file "
        "(SCANSTREAM_CSV_MAX_FILE_BYTES)"
    )
    assert len(load(tree, "big", cap=size).bars("AAA")) == 500


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(tree: Tree) -> None:
    """Given params checked while csv_dir was a real folder, when it is replaced by a symlink
    to the outside before the read, then the read refuses it."""
    (tree.root / "swap").mkdir()
    write_csv(market(60), tree.root / "swap")
    params = parse_params({"source": "csv", "csv_dir": "swap"}, csv_settings=tree.csv)
    (tree.root / "swap").rename(tree.root / "swapped")
    (tree.root / "swap").symlink_to(tree.outside)
    with pytest.raises(MarketDataError, match="swap: leads outside the CSV root"):
        CsvMarket(params, tree.csv)


def test_parse_errors_name_the_file_from_the_root_and_the_line(tree: Tree) -> None:
    """Given a malformed file in a sub-folder, when read, then the error names it from the
    root with its line, quotes the bad value cut short, and not the root's path."""
    (tree.root / "deep" / "er" / "v").mkdir(parents=True)
    long_value = "z" * 5000
    (tree.root / "deep" / "er" / "v" / "AAA.csv").write_text(
        f"ts,open,high,low,close,volume\n1,1,1,1,1,1\n2,1,1,1,{long_value},1\n"
    )
    with pytest.raises(MarketDataError) as info:
        load(tree, "deep/er")
    assert str(info.value) == (
        "deep/er/v/AAA.csv line 3: close '" + "z" * 40 + "...' is not a number"
    )


def test_a_field_over_the_csv_limit_is_a_clear_error(tree: Tree) -> None:
    """Given a cell over the csv module's field limit, when read, then the error names the
    file and line instead of escaping as a csv.Error."""
    (tree.root / "wide" / "v").mkdir(parents=True)
    (tree.root / "wide" / "v" / "AAA.csv").write_text(
        "ts,open,high,low,close,volume\n" + '1,1,1,1,"' + "9" * 200_000 + '",1\n'
    )
    with pytest.raises(MarketDataError, match=r"^wide/v/AAA.csv line 2: not CSV"):
        load(tree, "wide", cap=1_000_000)


def test_without_a_root_the_csv_source_is_refused_at_read_time_too(tree: Tree) -> None:
    """Given params from anywhere, when no root is set where the market is built, then the
    read refuses, naming the setting."""
    params = parse_params({"source": "csv", "csv_dir": "good"}, csv_settings=tree.csv)
    with pytest.raises(MarketDataError, match="SCANSTREAM_CSV_ROOT is not set"):
        CsvMarket(params, CsvSettings())


def test_the_csv_settings_are_read_from_the_environment() -> None:
    """Given SCANSTREAM_CSV_*, when settings are read, then the root and cap are theirs, the
    cap defaults to 64 MiB, and a cap below one byte is refused."""
    from scanstream.errors import ConfigError

    env = {"SCANSTREAM_CSV_ROOT": "/data/csv", "SCANSTREAM_CSV_MAX_FILE_BYTES": "1000"}
    assert Settings.from_env(env).csv == CsvSettings(root="/data/csv", max_file_bytes=1000)
    assert Settings.from_env({}).csv == CsvSettings(root=None, max_file_bytes=64 * 1024 * 1024)
    with pytest.raises(ConfigError, match="SCANSTREAM_CSV_MAX_FILE_BYTES"):
        Settings.from_env({"SCANSTREAM_CSV_MAX_FILE_BYTES": "0"})


# -- over HTTP, with workers ---------------------------------------------------------------


@pytest.fixture
def csv_settings(settings: Settings, tree: Tree) -> Settings:
    return settings.with_(csv=tree.csv)


@pytest.fixture
def api(csv_settings: Settings) -> Iterator[str]:
    with serve(create_app(csv_settings)) as url:
        yield url


@pytest.fixture
async def client(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, headers=auth("alice"), timeout=30) as c:
        yield c


def body(csv_dir: str) -> dict[str, Any]:
    return {"strategies": ["momentum"], "params": {"source": "csv", "csv_dir": csv_dir}}


async def everything_said(client: httpx.AsyncClient, scan_id: str) -> str:
    """Every answer about a scan, as text: status, results and the whole log."""
    said = []
    for path in ("", "/results", "/log"):
        response = await client.get(f"/v1/scans/{scan_id}{path}")
        assert response.status_code == 200, response.text
        said.append(response.text)
    return "\n".join(said)


@pytest.mark.anyio
async def test_post_answers_422_for_every_escape(client: httpx.AsyncClient, tree: Tree) -> None:
    """Given each csv_dir that escapes the root or cannot be a folder, when POSTed, then the
    answer is the contract's 422 naming params.csv_dir, never a 500, never an outside path."""
    for csv_dir, problem in REFUSED_AT_REQUEST:
        response = await client.post("/v1/scans", json=body(spelled(csv_dir, tree)))
        assert response.status_code == 422, (csv_dir, response.text)
        answer = response.json()
        assert answer["error"] == "invalid_request" and set(answer) == {"error", "detail"}
        assert answer["detail"].startswith("params.csv_dir: ") and problem in answer["detail"]
        assert not any(s in response.text for s in tree.secrets()), response.text


@pytest.mark.anyio
async def test_escapes_only_a_read_finds_fail_the_attempt_clearly(
    client: httpx.AsyncClient, csv_settings: Settings, tree: Tree
) -> None:
    """Given folders that pass the request's checks but hold an escaping venue or file, a
    loop, a FIFO or a file over the cap, when workers run their scans, then each strategy
    fails with an error naming the file from the root, and no answer or event shows outside
    contents or the root's path."""
    scans = {}
    for csv_dir, problem in FAILED_AT_READ:
        response = await client.post("/v1/scans", json=body(csv_dir))
        assert response.status_code == 202, response.text
        scans[response.json()["scan_id"]] = problem
    async with workers_running(csv_settings, builtin_strategies()):
        for scan_id, problem in scans.items():
            results = await client.get(f"/v1/scans/{scan_id}/results", params={"wait": 30})
            assert results.json()["state"] == "failed", results.text
            status = (await client.get(f"/v1/scans/{scan_id}")).json()
            error = status["strategies"][0]["error"]
            assert error["type"] == "PathRefused" and problem in error["message"], error
            said = await everything_said(client, scan_id)
            assert not any(s in said for s in tree.secrets())


@pytest.mark.anyio
async def test_a_folder_swapped_after_the_post_is_refused_by_the_worker(
    client: httpx.AsyncClient, csv_settings: Settings, tree: Tree
) -> None:
    """Given a scan accepted while csv_dir was a real folder, when the folder is replaced by
    a symlink to the outside before a worker reads it, then the attempt fails, unread."""
    write_csv(market(60), tree.root / "swap")
    response = await client.post("/v1/scans", json=body("swap"))
    assert response.status_code == 202, response.text
    scan_id = response.json()["scan_id"]
    (tree.root / "swap").rename(tree.root / "swapped")
    (tree.root / "swap").symlink_to(tree.outside)
    async with workers_running(csv_settings, builtin_strategies()):
        results = await client.get(f"/v1/scans/{scan_id}/results", params={"wait": 30})
    assert results.json()["state"] == "failed", results.text
    said = await everything_said(client, scan_id)
    assert "swap: leads outside the CSV root" in said
    assert not any(s in said for s in tree.secrets())


@pytest.mark.anyio
async def test_a_folder_reached_through_an_inside_symlink_scans(
    client: httpx.AsyncClient, csv_settings: Settings, tree: Tree
) -> None:
    """Given csv_dir a symlink to a folder inside the root, when scanned, then it completes,
    and the log keeps csv_dir as the request wrote it."""
    response = await client.post("/v1/scans", json=body("latest"))
    assert response.status_code == 202, response.text
    scan_id = response.json()["scan_id"]
    async with workers_running(csv_settings, builtin_strategies()):
        results = await client.get(f"/v1/scans/{scan_id}/results", params={"wait": 30})
    assert results.json()["state"] == "completed", results.text
    log = (await client.get(f"/v1/scans/{scan_id}/log")).json()
    assert log["events"][0]["params"] == {"source": "csv", "csv_dir": "latest"}
