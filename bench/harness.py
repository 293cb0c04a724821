"""What every benchmark shares: the one private Redis, real subprocesses (started in
their own process group and always killed), load generation (wrk, else a Python
asyncio generator in its own process), Redis INFO deltas, CPU time, percentiles.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from scanstream.embedded import RedisProcess, free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
SECRET = "bench-secret-" + "0" * 32
USER = "bench-user"
NOOP_MODULE = "bench.noop_strategies"
# The flags `scanstream api` gives uvicorn (scanstream/cli.py), for the baseline app.
UVICORN_FLAGS = [
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
    "--workers",
    "1",
    "--timeout-graceful-shutdown",
    "5",
]

# -- subprocesses ----------------------------------------------------------------------

_LIVE: dict[int, Proc] = {}


@dataclass(eq=False)
class Proc:
    """One subprocess in its own session (process group), logging to a file."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    log_path: Path
    port: int | None = None
    cwd: Path = REPO  # another checkout's root for a worker of that tree (bench.worker_trees)
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=dict(self.env),
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _LIVE[self.popen.pid] = self
        return self

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")

    def wait_http(self, path: str = "/healthz", timeout_s: float = 30.0) -> Proc:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                status, _ = http_request("GET", f"{self.url}{path}", timeout_s=1.0)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {path} in {timeout_s}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the whole process group, then SIGKILL if it lingers."""
        if self.popen is None:
            return
        _LIVE.pop(self.popen.pid, None)
        if self.popen.poll() is None:
            _killpg(self.popen.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout_s)
        # Whatever is left of the group (children included) goes now.
        _killpg(self.popen.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):  # a zombie we cannot reap: leave it
            self.popen.wait(5)


def _killpg(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_all() -> None:
    """Kill every subprocess still running (on exit, on Ctrl-C, on a crash)."""
    for proc in list(_LIVE.values()):
        proc.stop(timeout_s=3.0)


atexit.register(stop_all)


@contextmanager
def running(*procs: Proc, ready_path: str = "/healthz") -> Iterator[tuple[Proc, ...]]:
    """Start every process (HTTP ones waited for), stop them all whatever happens."""
    try:
        for p in procs:
            p.start()
        for p in procs:
            if p.port is not None:
                p.wait_http(ready_path)
        yield procs
    finally:
        for p in reversed(procs):
            p.stop()


# -- the bench context: one Redis for the whole run ------------------------------------


@dataclass
class Bench:
    quick: bool
    loadgen: str  # "wrk" or "python"
    tmp: Path
    redis_proc: RedisProcess
    explore: bool = False  # also measure what-if variants of scanstream's code

    @classmethod
    def start(cls, *, quick: bool, loadgen: str, explore: bool = False) -> Bench:
        tmp = Path(tempfile.mkdtemp(prefix="scanstream-bench-"))
        (tmp / "logs").mkdir()
        rp = RedisProcess(data_dir=tmp / "redis", appendfsync="everysec").start()
        return cls(quick=quick, loadgen=loadgen, tmp=tmp, redis_proc=rp, explore=explore)

    def close(self, keep_logs: bool = False) -> None:
        stop_all()
        self.redis_proc.stop()
        if not keep_logs:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def redis_url(self) -> str:
        return self.redis_proc.url

    @property
    def log_dir(self) -> Path:
        return self.tmp / "logs"

    def redis(self) -> redis.Redis:
        """A synchronous client for the bench's own reads (no socket timeout: it blocks)."""
        return redis.Redis.from_url(self.redis_url, socket_timeout=None)

    def flush(self) -> None:
        """Each benchmark starts on an empty Redis (same server, same settings)."""
        with self.redis() as r:
            r.flushall()

    # -- environments and commands --

    def env(self, prefix: str, *, root: Path = REPO, **extra: str) -> dict[str, str]:
        """A subprocess's environment; `root`: the checkout whose code it runs (its
        packages come first on PYTHONPATH, ahead of the venv's editable install)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCANSTREAM_")}
        env.update(
            {
                "SCANSTREAM_REDIS_URL": self.redis_url,
                "SCANSTREAM_SECRET": SECRET,
                "SCANSTREAM_PREFIX": prefix,
                "SCANSTREAM_STRATEGIES": NOOP_MODULE,
                "BENCH_REDIS_URL": self.redis_url,
                "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(
                    os.pathsep
                ),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def _scanstream(self, args: Sequence[str], variant: Sequence[str]) -> list[str]:
        if variant:  # a bench-only entry point that patches, then runs the same CLI
            return [sys.executable, "-m", "bench.variant", *variant, "--", *args]
        return [sys.executable, "-m", "scanstream", *args]

    def api(
        self, prefix: str, *, variant: Sequence[str] = (), name: str = "api", **env: str
    ) -> Proc:
        port = free_port()
        argv = self._scanstream(
            ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], variant
        )
        log = self.log_dir / f"{name}-{port}.log"
        return Proc(name, argv, self.env(prefix, **env), log, port=port)

    def worker(
        self,
        prefix: str,
        concurrency: int,
        *,
        variant: Sequence[str] = (),
        name: str = "worker",
        root: Path = REPO,
        **env: str,
    ) -> Proc:
        """`scanstream worker`; `root`: run another checkout's (e.g. a `git worktree` of an
        older commit), with this venv's interpreter and packages."""
        argv = self._scanstream(
            ["worker", "--concurrency", str(concurrency), "--grace", "5"], variant
        )
        return Proc(
            name,
            argv,
            self.env(prefix, root=root, **env),
            self.log_dir / f"{name}-{time.monotonic_ns()}.log",
            cwd=root,
        )

    def bare_app(self) -> Proc:
        return self.uvicorn_app("bench.bare_app:app_from_env", "bare-app", "benchbare")

    def uvicorn_app(self, factory: str, name: str, prefix: str) -> Proc:
        """A baseline ASGI app (`module:factory`) under uvicorn, as the API is served."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *UVICORN_FLAGS,
        ]
        return Proc(name, argv, self.env(prefix), self.log_dir / f"{name}-{port}.log", port=port)

    def bare_consumer(
        self,
        mode: str,
        jobs_keys: Sequence[str],
        group: str,
        prefix: str = "",
        partitions: int | None = None,
    ) -> Proc:
        """A baseline consumer reading the job streams `jobs_keys` (e.g. every partition's),
        in `group`; protocol mode: on `prefix`'s keys, with `partitions` job partitions."""
        argv = [
            sys.executable,
            "-m",
            "bench.bare_consumer",
            "--mode",
            mode,
            "--redis-url",
            self.redis_url,
            "--jobs",
            *jobs_keys,
            "--group",
            group,
        ]
        if prefix:
            argv += ["--prefix", prefix]
        if partitions is not None:
            argv += ["--partitions", str(partitions)]
        return Proc(
            f"bare-consumer-{mode}",
            argv,
            self.env("benchbare"),
            self.log_dir / f"bare-consumer-{mode}-{time.monotonic_ns()}.log",
        )


# -- HTTP ------------------------------------------------------------------------------


def http_request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, bytes]:
    m = re.fullmatch(r"http://([^/:]+):(\d+)(/.*)", url)
    assert m, url
    conn = http.client.HTTPConnection(m[1], int(m[2]), timeout=timeout_s)
    try:
        conn.request(method, m[3], body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def bearer(secret: str = SECRET, user: str = USER) -> str:
    from scanstream.api.auth import make_token

    return make_token(secret, user)


# -- load generation -------------------------------------------------------------------


@dataclass
class Load:
    tool: str
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m[1]) * _UNITS_MS[m[2]]


def parse_wrk(out: str) -> Load:
    """Requests/sec, p50 and p99 of `wrk --latency` output."""

    def find(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out)
        if m is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{out}")
        return m

    done = find(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Load(
        tool="wrk",
        requests=int(done[1]),
        duration_s=_ms(done[2] + done[3]) / 1000,
        rps=float(find(r"Requests/sec:\s+([\d.]+)")[1]),
        p50_ms=_ms(find(r"\s50%\s+(\S+)")[1]),
        p99_ms=_ms(find(r"\s99%\s+(\S+)")[1]),
        non_2xx=int(non2xx[1]) if non2xx else 0,
        socket_errors=sum(int(x) for x in errors.groups()) if errors else 0,
    )


def pick_loadgen(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--loadgen wrk: wrk is not on PATH")
    return choice


def load(
    tool: str,
    url: str,
    *,
    connections: int,
    threads: int,
    duration_s: float,
    headers: Mapping[str, str],
) -> Load:
    """Closed-loop load on `url`: `connections` keep-alive connections for `duration_s`."""
    if tool == "wrk":
        argv = [
            "wrk",
            "-c",
            str(connections),
            "-t",
            str(threads),
            "-d",
            f"{duration_s:g}s",
            "--latency",
            "--timeout",
            "10s",
        ]
        for k, v in headers.items():
            argv += ["-H", f"{k}: {v}"]
        done = subprocess.run(
            [*argv, url], capture_output=True, text=True, check=True, timeout=duration_s + 60
        )
        return parse_wrk(done.stdout)
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        url,
        "-c",
        str(connections),
        "-d",
        str(duration_s),
    ]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    done = subprocess.run(
        argv, capture_output=True, text=True, check=True, cwd=REPO, timeout=duration_s + 60
    )
    return Load(tool="python", **json.loads(done.stdout))


# -- Redis INFO deltas -----------------------------------------------------------------


@dataclass
class RedisCounters:
    commands: dict[str, int]
    reads: int  # server-side read events: one per batch of bytes a client sends (a round trip)
    cpu_s: float

    @classmethod
    def snapshot(cls, r: redis.Redis) -> RedisCounters:
        info = r.info("all")
        commands = {
            k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in info.items()
            if k.startswith("cmdstat_")
        }
        return cls(
            commands,
            int(info.get("total_reads_processed", 0)),
            float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        )

    def since(self, before: RedisCounters, ignore: Sequence[str] = ("info",)) -> RedisCounters:
        """The counts since `before`, without the commands `ignore` names (with their
        subcommands: Redis 7 counts "xinfo|groups", not "xinfo")."""
        names = set(self.commands) | set(before.commands)
        delta = {
            n: self.commands.get(n, 0) - before.commands.get(n, 0)
            for n in names
            if n.split("|")[0] not in ignore
        }
        return RedisCounters(
            {n: c for n, c in sorted(delta.items()) if c},
            self.reads - before.reads,
            self.cpu_s - before.cpu_s,
        )

    @property
    def total_commands(self) -> int:
        return sum(self.commands.values())


# -- processes' CPU --------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU so far of a process and its live descendants (Linux /proc): a
    worker's strategy processes count as the worker's; 0 when unavailable."""
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        kids = [int(c) for c in children]
        out += kids
        todo += kids
    return out


def _system_cpu() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) of the whole machine, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    return sum(values), values[3] + values[4]


def _own_and_reaped_cpu() -> float:
    """CPU of this process plus its children reaped so far (wrk, the Python loadgen)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class CpuMeter:
    """CPU over a span, in cores: of some processes (`shares`), of this process and the
    children it reaped meanwhile (`harness`: the load generator), and of everything else
    on the machine (`foreign`: other people's work that competes for the same cores).

        with CpuMeter([pid]) as m: ...
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.shares: list[float] = []
        self.harness = 0.0
        self.busy = 0.0
        self.foreign = 0.0

    def __enter__(self) -> CpuMeter:
        self.t0 = time.monotonic()
        self._start = [cpu_seconds(p) for p in self.pids]
        self._own = _own_and_reaped_cpu()
        self._system = _system_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = max(1e-9, time.monotonic() - self.t0)
        self.shares = [
            (cpu_seconds(p) - c) / elapsed for p, c in zip(self.pids, self._start, strict=True)
        ]
        self.harness = (_own_and_reaped_cpu() - self._own) / elapsed
        total, idle = (a - b for a, b in zip(_system_cpu(), self._system, strict=True))
        if total > 0:
            self.busy = (1 - idle / total) * (os.cpu_count() or 1)
        self.foreign = max(0.0, self.busy - sum(self.shares) - self.harness)

    def as_dict(self, names: Sequence[str]) -> dict[str, float]:
        out = {f"{n}_cpu": round(s, 2) for n, s in zip(names, self.shares, strict=True)}
        out.update(harness_cpu=round(self.harness, 2), foreign_cpu=round(self.foreign, 2))
        return out


FOREIGN_WARN = 0.25  # cores used by other processes during a measurement: flag it


def noisy(measurement: Mapping[str, Any]) -> bool:
    """Whether other processes used more than FOREIGN_WARN cores during a measurement."""
    return bool(measurement.get("foreign_cpu", 0.0) > FOREIGN_WARN)


def verdict(ok: bool, *measurements: Mapping[str, Any]) -> str:
    """ "ok" / "MISS", marked "(noisy)" when other processes competed for the CPU during
    any of the measurements it rests on (see the per-CPU-second rows then)."""
    text = "ok" if ok else "MISS"
    if any(noisy(m) for m in measurements):
        text += " (noisy)"
    return text


# -- small helpers ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def entry_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


@dataclass
class Row:
    """One line of the summary table."""

    bench: str
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""


def say(text: str = "") -> None:
    print(text, flush=True)
