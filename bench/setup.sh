#!/usr/bin/env bash
# Install what the benchmarks need besides the project's own venv (`make install`):
#   * Debian's redis-server (broker + result backend of the Celery peer), if missing;
#   * bench/.venvs/celery:         Celery 5 + redis client (the Celery peer's driver and worker);
#   * bench/.venvs/statefun-tasks: statefun-tasks 0.9.93, the last release whose pipeline engine
#                                  is pure Python, with the dependency versions it needs;
#   * matplotlib in the project venv (the `bench` extra), for the plot.
# Idempotent: each venv is (re)built only when its requirement line changes. Needs root for apt.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PY:-$ROOT/.venv/bin/python}"
VENVS="${BENCH_VENVS:-$HERE/.venvs}"

CELERY_REQ="celery[redis]==5.7.0 redis==6.4.0"
# apache-flink-statefun 3.2.0 (the SDK 0.9.93 was built against: 3.3.0 hands ingress messages a None caller, which it does not expect) pins protobuf<4; no protobuf 3.x wheel has a C extension for
# CPython 3.11, so this side runs the pure-Python protobuf (reported by the benchmark).
SFT_REQ="statefun-tasks==0.9.93 apache-flink-statefun==3.2.0 protobuf==3.20.3 kafka-python==2.0.2"
BENCH_EXTRA="matplotlib==3.10.7"

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench/setup.sh: redis-server is missing; install it (apt-get install redis-server)" >&2
    exit 1
  fi
  echo "bench/setup.sh: installing redis-server (Debian)"
  apt-get update -q
  # no service start at install time: the benchmark starts its own redis on a loopback port
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends redis-server
  # a Debian post-install may have started the packaged service anyway; leave nothing running
  if command -v service >/dev/null 2>&1; then service redis-server stop >/dev/null 2>&1 || true; fi
fi

base_python="$("$PY" -c 'import sys; print(sys._base_executable)')"

ensure_venv() {  # name, requirement line
  local dir="$VENVS/$1" req="$2"
  if [ -f "$dir/.requirements" ] && [ "$(cat "$dir/.requirements")" = "$req" ] && [ -x "$dir/bin/python" ]; then
    return 0
  fi
  echo "bench/setup.sh: building $dir ($req)"
  rm -rf "$dir"
  "$base_python" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade "pip>=25.1"
  # shellcheck disable=SC2086
  "$dir/bin/python" -m pip install -q $req
  echo "$req" >"$dir/.requirements"
}

mkdir -p "$VENVS"
ensure_venv celery "$CELERY_REQ"
ensure_venv statefun-tasks "$SFT_REQ"

if ! "$PY" -c 'import matplotlib' >/dev/null 2>&1; then
  echo "bench/setup.sh: installing $BENCH_EXTRA into the project venv (the bench extra)"
  "$PY" -m pip install -q "$BENCH_EXTRA"
fi
