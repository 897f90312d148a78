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
cd "$root"
exec "$venv/bin/python" -m pytest client/tests -p no:cacheprovider "$@"
