#!/usr/bin/env bash
# Run client/tests in a fresh virtualenv holding only the core `flink-tasks` (no extras) and
# `flink-tasks-client`, plus the test tools: proves the client needs nothing of the worker side
# (aiohttp, the StateFun SDK). Usage: client/scripts/test-isolated.sh [pytest args...]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${FLINK_TASKS_ISOLATED_VENV:-$(mktemp -d)/venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e "$root" -e "$root/client" \
    pytest==8.4.2 pytest-asyncio==1.2.0 pytest-timeout==2.4.0
if "$venv/bin/python" -c "import aiohttp" 2>/dev/null; then
    echo "aiohttp is installed in the isolated venv: the client pulls in the worker side" >&2
    exit 1
fi
if ! "$venv/bin/python" -c "import rich" 2>/dev/null; then
    echo "rich is missing from the isolated venv: the client's CLI needs it" >&2
    exit 1
fi
cd "$root"
# The CLI works there: standalone, and registered into the core `flink-tasks` command.
"$venv/bin/python" -m flink_tasks_client --help >/dev/null
"$venv/bin/flink-tasks" --help | grep -q "watch" || {
    echo "flink-tasks does not list the client's commands in the isolated venv" >&2
    exit 1
}
exec "$venv/bin/python" -m pytest client/tests -p no:cacheprovider "$@"
