#!/usr/bin/env bash
# The compose job manager's entrypoint: the official image's, restored from the newest retained
# checkpoint. compose runs Flink without high availability, so a job manager that restarts
# (a crash, `docker compose restart`, `down` and `up` without -v) would otherwise start the job
# with empty state and every pipeline in flight would be lost. The same rule as
# `flink-tasks local up`: the newest complete checkpoint (`<job>/chk-N` holding `_metadata`),
# and the checkpoint directories of older jobs are deleted (each start is a new job id that
# never deletes what it restored from; its first checkpoint is a full one).
# An explicit --fromSavepoint/-s (an upgrade from a savepoint) is passed on untouched.
set -euo pipefail

CHECKPOINTS_DIR="${FLINK_TASKS_CHECKPOINTS_DIR:-/checkpoints/checkpoints}"
ENTRYPOINT="${FLINK_TASKS_IMAGE_ENTRYPOINT:-/docker-entry-point.sh}"

for arg in "$@"; do
  if [[ "$arg" == "--fromSavepoint" || "$arg" == "-s" ]]; then
    exec "$ENTRYPOINT" "$@"
  fi
done

newest=""
if [[ -d "$CHECKPOINTS_DIR" ]]; then
  # newest _metadata by modification time, then the highest N; a directory find cannot read
  # must not keep the job manager from starting
  newest="$(
    { find "$CHECKPOINTS_DIR" -mindepth 3 -maxdepth 3 -path '*/chk-*/_metadata' \
      -printf '%T@ %h\n' 2>/dev/null || true; } |
      sed -E 's/^([0-9.]+) (.*\/chk-([0-9]+))$/\1 \3 \2/' |
      sort -k1,1n -k2,2n | tail -n 1 | cut -d' ' -f3-
  )"
fi

if [[ -z "$newest" ]]; then
  echo "flink-tasks: no retained checkpoint in $CHECKPOINTS_DIR; starting the job fresh" >&2
  exec "$ENTRYPOINT" "$@"
fi

job_dir="$(dirname "$newest")"
for dir in "$CHECKPOINTS_DIR"/*/; do
  dir="${dir%/}"
  if [[ "$dir" != "$job_dir" && "$(basename "$dir")" =~ ^[0-9a-f]{32}$ ]]; then
    echo "flink-tasks: deleting the checkpoints of an earlier job: $dir" >&2
    rm -rf -- "$dir" || echo "flink-tasks: could not delete $dir; going on" >&2
  fi
done
echo "flink-tasks: restoring the job from $newest" >&2
exec "$ENTRYPOINT" --fromSavepoint "file://$newest" "$@"
