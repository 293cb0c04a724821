"""`scanstream dev` is a good citizen: one per data folder, stopped by any signal within
seconds with streams open and nothing left behind, and the README's commands work next to it.

Every test runs a real `scanstream dev` (embedded Redis, API, worker) in a folder of its
own under tmp_path, as a user would: cwd is that folder, its data in `./.scanstream`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from scanstream.api.auth import make_token
from scanstream.embedded import free_port
from tests.support.procs import REPO

STOPPED_WITHIN_S = 5.0
BAD_TRACES = ("Traceback", "CancelledError", "Exception ignored")


def user_env(**extra: str) -> dict[str, str]:
    """A fresh shell's environment: no SCANSTREAM_* (so no Redis URL and no secret)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCANSTREAM_")}
    env["PYTHONPATH"] = str(REPO)  # the test strategies
    env.update(extra)
    return env


def like_a_terminal() -> None:
    """Ctrl-C and hang-up as a terminal delivers them: a test run started as a background
    job has SIGINT ignored, and a process keeps what it inherits ignored (dev does too)."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def alive(pid: int) -> bool:
    """Running (a zombie left for init to reap is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s}s: {what}")


@dataclass
class Dev:
    """One `scanstream dev` process in `folder`."""

    folder: Path
    args: tuple[str, ...] = ("--no-demo",)
    strategies: str = "tests.support.strategies"  # "": the built-in ones only
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.folder / ".scanstream"

    def start(self) -> Dev:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"dev-{self.port}"
        with (
            (self.folder / f"{name}.out").open("wb") as out,
            (self.folder / f"{name}.err").open("wb") as err,
        ):
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scanstream", "dev", "--port", str(self.port), *self.args],
                cwd=self.folder,
                env=user_env(SCANSTREAM_STRATEGIES=self.strategies),
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=like_a_terminal,
            )
        return self

    def output(self) -> str:
        name = f"dev-{self.port}"
        return (self.folder / f"{name}.out").read_text() + (self.folder / f"{name}.err").read_text()

    def wait_ready(self, timeout_s: float = 20.0) -> Dev:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"dev exited early: {self.output()}")
            try:
                return httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout_s, "dev answers /healthz")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def redis_pid(self) -> int:
        return int((self.data / "redis" / "redis.pid").read_text())

    def token(self, user: str = "alice") -> str:
        return make_token((self.data / "secret").read_text().strip(), user)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stopped_by(self, signum: int) -> tuple[int, float]:
        """Send `signum`; the exit code and how long it took."""
        assert self.process is not None
        sent = time.monotonic()
        os.kill(self.pid, signum)
        try:
            code = self.process.wait(STOPPED_WITHIN_S + 5)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"dev still running: {self.output()}") from None
        return code, time.monotonic() - sent


@pytest.fixture
def devs(tmp_path: Path) -> Iterator[list[Dev]]:
    """Started devs are SIGKILLed at the end whatever happens (their Redis goes with them)."""
    started: list[Dev] = []
    yield started
    for dev in started:
        dev.stop()


def run_dev(devs: list[Dev], folder: Path, *args: str) -> Dev:
    dev = Dev(folder, args) if args else Dev(folder)
    devs.append(dev.start())
    return dev.wait_ready()


def cli(
    folder: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`scanstream ARGS` run from `folder` in a fresh shell's environment plus `env`."""
    return subprocess.run(
        [sys.executable, "-m", "scanstream", *args],
        cwd=folder,
        env=user_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=20.0,
    )


def start_slow_scan(dev: Dev, slow_s: float = 30.0) -> str:
    response = httpx.post(
        dev.url + "/v1/scans",
        json={"strategies": ["slow"], "params": {"slow_s": slow_s}},
        headers={"Authorization": f"Bearer {dev.token()}"},
    )
    assert response.status_code == 202, response.text
    scan_id: str = response.json()["scan_id"]
    return scan_id


def assert_everything_gone(dev: Dev, kids: list[int], code: int, took_s: float) -> None:
    assert code in (0, 130), dev.output()
    assert took_s < STOPPED_WITHIN_S, f"took {took_s:.1f}s"
    wait_until(lambda: not any(alive(pid) for pid in kids), 2.0, f"children {kids} gone")
    text = dev.output()
    assert not any(bad in text for bad in BAD_TRACES), text


def test_a_second_dev_in_the_same_folder_names_the_first_and_exits_1(
    devs: list[Dev], tmp_path: Path
) -> None:
    """The second `dev` on one data folder refuses to start and says which pid holds it."""
    first = run_dev(devs, tmp_path / "proj")
    second = Dev(tmp_path / "proj").start()
    devs.append(second)
    assert second.process is not None
    code = second.process.wait(20)
    assert code == 1
    assert f"pid {first.pid}" in second.output()
    assert "Traceback" not in second.output()
    assert first.process is not None and first.process.poll() is None  # untouched


def test_ctrl_c_with_an_event_stream_open_stops_everything_within_5s(
    devs: list[Dev], tmp_path: Path
) -> None:
    """SIGINT while an SSE client follows a running scan: the stream ends cleanly and dev,
    its Redis and every other child are gone within 5 s, without a traceback."""
    dev = run_dev(devs, tmp_path / "proj")
    scan_id = start_slow_scan(dev)
    received: list[str] = []
    ended: list[BaseException | None] = []

    minted = httpx.post(
        f"{dev.url}/v1/scans/{scan_id}/stream-token",
        headers={"Authorization": f"Bearer {dev.token()}"},
    )
    assert minted.status_code == 200, minted.text

    def follow() -> None:  # as the dashboard does: a stream token in the URL
        url = f"{dev.url}/v1/scans/{scan_id}/events?access_token={minted.json()['token']}"
        try:
            with httpx.stream("GET", url, timeout=httpx.Timeout(10.0, read=30.0)) as response:
                for line in response.iter_lines():
                    received.append(line)
            ended.append(None)
        except BaseException as exc:  # reported below
            ended.append(exc)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    wait_until(
        lambda: any(line.startswith("event: strategy.progress") for line in received),
        15.0,
        "the stream follows the running scan",
    )
    kids = children(dev.pid)
    assert dev.redis_pid() in kids

    code, took_s = dev.stopped_by(signal.SIGINT)

    assert_everything_gone(dev, kids, code, took_s)
    reader.join(5.0)
    assert ended == [None], ended  # the response ended; no broken connection
    assert any("shutting down" in line for line in received)


def test_ctrl_c_during_the_demo_stops_everything_within_5s(devs: list[Dev], tmp_path: Path) -> None:
    """SIGINT while the demo scan draws its bars: exit 0 or 130, no traceback, nothing left."""
    dev = Dev(tmp_path / "proj", (), strategies="")  # the test ones log their failures
    devs.append(dev.start())
    dev.wait_ready()
    wait_until(lambda: "watching it live" in dev.output(), 15.0, "the demo runs")
    time.sleep(0.5)  # into the bars
    kids = children(dev.pid)

    code, took_s = dev.stopped_by(signal.SIGINT)

    assert_everything_gone(dev, kids, code, took_s)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP, signal.SIGTERM])
def test_the_embedded_redis_dies_with_dev_however_dev_dies(
    devs: list[Dev], tmp_path: Path, signum: int
) -> None:
    """SIGKILL (the kernel's death signal), SIGHUP (a closed terminal) or SIGTERM of
    `dev`: its redis-server is gone within a few seconds."""
    dev = run_dev(devs, tmp_path / "proj")
    redis_pid = dev.redis_pid()
    assert alive(redis_pid)

    os.kill(dev.pid, signum)

    assert dev.process is not None
    dev.process.wait(STOPPED_WITHIN_S + 5)
    wait_until(lambda: not alive(redis_pid), STOPPED_WITHIN_S, "redis-server gone")
    if signum != signal.SIGKILL:
        assert not any(bad in dev.output() for bad in BAD_TRACES), dev.output()


def test_the_readme_commands_work_in_a_fresh_shell_beside_dev(
    devs: list[Dev], tmp_path: Path
) -> None:
    """README "Using it", pasted into a fresh shell in dev's folder: `scanstream token`
    signs with the dev secret (saying so), and the scan commands work with that token; the
    token in the dashboard link dev printed works too, and says until when."""
    folder = tmp_path / "proj"
    dev = run_dev(devs, folder)
    wait_until(lambda: "good until" in dev.output(), 10.0, "dev prints its dashboard link")
    link = re.search(r"dashboard: (\S+)/#token=(\S+)", dev.output())
    assert link is not None and link[1] == dev.url, dev.output()
    signed_in = httpx.get(dev.url + "/v1/scans", headers={"Authorization": f"Bearer {link[2]}"})
    assert signed_in.status_code == 200, signed_in.text

    token = cli(folder, "token", "alice")
    assert token.returncode == 0, token.stderr
    assert ".scanstream/secret" in token.stderr
    env = {"SCANSTREAM_API_URL": dev.url, "SCANSTREAM_TOKEN": token.stdout.strip()}
    started = cli(folder, "scan", "start", "-s", "noop", env=env)
    assert started.returncode == 0, started.stderr
    scan_id = json.loads(started.stdout)["scan_id"]
    status = cli(folder, "scan", "status", scan_id, env=env)
    results = cli(folder, "scan", "results", scan_id, "--wait", "10", env=env)

    assert status.returncode == 0, status.stderr
    assert '"user_id": "alice"' in status.stdout
    assert results.returncode == 0 and '"complete": true' in results.stdout, results.stderr


def test_cli_errors_are_one_line_never_a_traceback(devs: list[Dev], tmp_path: Path) -> None:
    """Unreachable API, malformed URL or token, no token, HTTP errors and Ctrl-C during
    `scan watch`: one line on stderr and a non-zero exit."""
    folder = tmp_path / "proj"
    dev = run_dev(devs, folder)
    good = {"SCANSTREAM_API_URL": dev.url, "SCANSTREAM_TOKEN": dev.token()}
    missing = "scan_" + "0" * 32
    cases = {
        "unreachable": {**good, "SCANSTREAM_API_URL": f"http://127.0.0.1:{free_port()}"},
        "empty token": {**good, "SCANSTREAM_TOKEN": ""},
        "malformed token": {**good, "SCANSTREAM_TOKEN": "not a token\x01"},
        "malformed URL": {**good, "SCANSTREAM_API_URL": "http://[::1"},
        "not http": {**good, "SCANSTREAM_API_URL": "localhost:8000"},
        "401": {**good, "SCANSTREAM_TOKEN": make_token("another-secret", "alice")},
        "404": good,
    }
    for case, env in cases.items():
        done = cli(folder, "scan", "status", missing, env=env)
        assert done.returncode != 0, case
        assert len(done.stderr.strip().splitlines()) == 1, (case, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout, (case, done.stderr)
    assert "cannot reach the API" in cli(folder, "scan", "list", env=cases["unreachable"]).stderr
    assert "401 unauthorized" in cli(folder, "scan", "list", env=cases["401"]).stderr

    scan_id = start_slow_scan(dev)
    out = folder / "watch.out"
    with out.open("w") as sink:
        watch = subprocess.Popen(
            [sys.executable, "-m", "scanstream", "scan", "watch", scan_id],
            cwd=folder,
            env=user_env(**good),
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=like_a_terminal,
        )
    wait_until(lambda: scan_id in out.read_text(), 15.0, "watch draws")
    time.sleep(0.5)
    watch.send_signal(signal.SIGINT)
    assert watch.wait(5.0) == 130
    assert "Traceback" not in out.read_text()
