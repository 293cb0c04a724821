# scanstream's recipes. `just` alone lists them.

set dotenv-load := false

default:
    @just --list

# --- run ---------------------------------------------------------------------

# everything on one machine: embedded Redis, API, a worker, and a demo scan
dev *ARGS:
    scanstream dev {{ARGS}}

# Redis (AOF always) + 2 API processes + 2 workers in containers
up:
    docker compose up --build

# stop the containers
down:
    docker compose down

# --- test --------------------------------------------------------------------

# the whole test suite (starts its own redis-server processes)
test *ARGS:
    python -m pytest {{ARGS}}

# lint and type-check
check:
    ruff check scanstream consumers tests bench
    ruff format --check scanstream consumers tests bench
    mypy

# format the code
fmt:
    ruff format scanstream consumers tests bench
    ruff check --fix scanstream consumers tests bench

# --- measure -----------------------------------------------------------------

# benchmarks: figures and ratios against baselines measured in the same run
bench *ARGS:
    python -m bench {{ARGS}}

# what CI runs, on a fresh machine
ci:
    bash .ci/run
