# ruff: noqa: E501, RUF001
"""Render bench/results.md (tables) and bench/b3_scale.png from the collected JSON."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def _spread(values: list[float], digits: int = 0) -> str:
    if not values:
        return "—"
    return f"{_fmt(statistics.median(values), digits)} ({_fmt(min(values), digits)}–{_fmt(max(values), digits)})"


def _ok(flag: bool | None) -> str:
    return "—" if flag is None else ("met" if flag else "**missed**")


def _get(d: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def write(results: dict[str, Any], md_path: Path, png_path: Path) -> None:
    m = results.get("machine", {})
    rt = results.get("realtime", {})
    cel = results.get("celery", {})
    b4 = results.get("b4_upb", {})
    b4py = results.get("b4_python", {})
    sft = results.get("b4_sft", {})
    lines: list[str] = []
    add = lines.append
    add("# Benchmark results (`make bench`)")
    add("")
    add(
        "Written by `make bench` (`python -m bench.run`); before/after measurements of single changes, run by hand, "
        "are in `bench/measurements.md`, and docs/benchmarks.md explains both."
    )
    add("")
    add(
        f"Run {results.get('started', '?')}, {results.get('total_s', 0) / 60:.1f} min in all. Machine: {m.get('cores')} cores "
        f"({m.get('cpu', '?')}), {m.get('memory_gib', '?')} GiB, {m.get('platform', '?')}, Python {m.get('python')}, {m.get('java', '?')}. "
        f"Load average at start {' '.join(m.get('loadavg_start', []))}, at end {' '.join(m.get('loadavg_end', []))}: "
        "absolute numbers move with the machine's load (the bench's own runtime, Kafka and clients share the cores), so compare "
        "the ratios (same run, same machine)."
    )
    add("")
    if results.get("note"):
        add(f"Note: {results['note']}")
        add("")
    versions = _get(cel, "versions") or {}
    add(
        f"Versions: flink-tasks (this tree) on StateFun 3.3.0 / Flink 1.16.2 / Kafka 3.9.2, protobuf `{_get(b4, 'protobuf') or rt.get('protobuf', '?')}`; "
        f"Celery {versions.get('celery', '?')} (kombu {versions.get('kombu', '?')}, redis-py {versions.get('redis-py', '?')}) on redis-server "
        f"{versions.get('redis-server', '?')}, {cel.get('pool', '?')} pool, concurrency {cel.get('concurrency', '?')}; statefun-tasks "
        f"0.9.93 on apache-flink-statefun 3.2.0, protobuf `{sft.get('protobuf', '?')}` (pure Python: protobuf<4 has no C extension for CPython 3.11)."
    )
    add("")
    add(
        f"Repetitions: {rt.get('reps', '?')} measured after {rt.get('warmup', '?')} warm-up run(s) per shape (plus 3 warm-up pipelines per runtime) "
        "unless the row says otherwise; median (min–max)."
    )
    add("")
    alo = rt.get("alo", {})
    eo = rt.get("eo", {})
    add("## Results")
    add("")
    add("| bench | shape | flink-tasks | peer | flink-tasks / peer | target | |")
    add("|---|---|---|---|---|---|---|")
    # B1
    b1 = alo.get("b1", {})
    cb1 = cel.get("b1", {})
    for label in ("none", "100"):
        ft = _get(b1, label, "tasks_per_s") or []
        cr = cb1.get("tasks_per_s") or []
        ratio = statistics.median(ft) / statistics.median(cr) if ft and cr else None
        met = (statistics.median(ft) >= 1000 and (ratio or 0) > 1) if ft and cr else None
        peer = f"Celery group: {_spread(cr)} tasks/s" + (
            " (no max_parallelism in Celery: same group)" if label == "100" else ""
        )
        add(
            f"| B1 fan-out, real runtime | in_parallel of {_get(b1, label, 'n') or 1000} trivial tasks, max_parallelism={label} | {_spread(ft)} tasks/s | {peer} | "
            f"{_fmt(ratio, 2)}× | ≥ 1,000/s and > Celery | {_ok(met)} |"
        )
    # B2
    tuned = rt.get("tuned", {})
    for key, data in (
        ("at-least-once", alo.get("b2")),
        ("exactly-once", eo.get("b2")),
        ("tuned", tuned.get("b2")),
    ):
        if not data:
            continue
        cb2 = cel.get("b2") if key != "exactly-once" else None
        interval = (alo if key != "exactly-once" else eo).get("checkpoint_interval_ms")
        if key == "tuned":
            key = f"at-least-once, **Flink buffer timeout {tuned.get('buffer_timeout_ms')} ms** (Flink's stock value; the project sets 5 ms)"
        ft = f"p50 {_fmt(data['p50_ms'], 1)} / p95 {_fmt(data['p95_ms'], 1)} / p99 {_fmt(data['p99_ms'], 1)} ms"
        peer = (
            f"Celery chain: p50 {_fmt(cb2['p50_ms'], 1)} / p95 {_fmt(cb2['p95_ms'], 1)} / p99 {_fmt(cb2['p99_ms'], 1)} ms"
            if cb2
            else "—"
        )
        ratio = f"{_fmt(data['p50_ms'] / cb2['p50_ms'], 2)}× (p50)" if cb2 else "—"
        target = "p50 ≤ 50 ms" if key.startswith("at-least-once") else "(reported)"
        met = data["p50_ms"] <= 50 if key.startswith("at-least-once") else None
        add(
            f"| B2 chain latency, real runtime | {data['steps']}-step continue_with, {data['runs']} warm runs, egress {key}, checkpoint {interval} ms | {ft} | {peer} | {ratio} | {target} | {_ok(met)} |"
        )
    # B3
    b3 = alo.get("b3", {})
    cb3 = cel.get("b3", {})
    per_child: dict[str, dict[int, float]] = {}
    for row in sorted(b3.values(), key=lambda r: (r["variant"], r["n"])):
        n = row["n"]
        per_child.setdefault(row["variant"], {})[n] = row["us_per_child"]
        crow = cb3.get(f"group/{n}")
        peer = (
            f"Celery group: {_fmt(crow['median_wall_s'], 2)} s, {_fmt(crow['us_per_child'])} µs/child"
            if crow
            else "—"
        )
        ratio = f"{_fmt(crow['us_per_child'] / row['us_per_child'], 2)}× faster" if crow else "—"
        variant = (
            "automatic staging" if row["variant"] == "auto" else f"num_stages={row['num_stages']}"
        )
        add(
            f"| B3 scale, real runtime | orchestrator task → in_parallel of {n:,} ({variant}) → count; {len(row['wall_s'])} run(s) | "
            f"{_fmt(row['median_wall_s'], 2)} s, {_fmt(row['us_per_child'])} µs/child | {peer} | {ratio} | — | |"
        )
    for variant, costs in per_child.items():
        if 1000 in costs and max(costs) > 1000:
            big = max(costs)
            growth = costs[big] / costs[1000]
            add(
                f"| B3 flatness | {variant}: µs/child at {big:,} ÷ at 1,000 | {growth:.2f} | — | — | ≤ 2 | {_ok(growth <= 2)} |"
            )
    for n, crow in sorted(((r["n"], r) for r in cb3.values()), key=lambda t: t[0]):
        per_child.setdefault("celery group", {})[n] = crow["us_per_child"]
    for row in ((results.get("topology") or {}).get("b3") or {}).values():
        per_child.setdefault(f"topology {row['variant']}", {})[row["n"]] = row["us_per_child"]
    # B4
    shapes = b4.get("shapes", {})
    sshapes = sft.get("shapes", {})
    pshapes = b4py.get("shapes", {})
    for key, row in shapes.items():
        po = [r["completions_per_s"] for r in row.get("pipeline_only", [])]
        e2e = [r["completions_per_s"] for r in row.get("end_to_end", [])]
        srow = sshapes.get(key)
        spo = [r["completions_per_s"] for r in srow["pipeline_only"]] if srow else []
        ratio = statistics.median(po) / statistics.median(spo) if po and spo else None
        batch = row["pipeline_only"][0]["mean_batch"] if row.get("pipeline_only") else "?"
        peer = f"statefun-tasks 0.9.93: {_spread(spo, 1)}/s ({len(spo)} runs)" if spo else "—"
        met = None
        target = "—"
        if key.startswith("fanout:10000") or key.startswith("chain:1000"):
            target = "≥ 20,000/s" + (" and ≥ 10× statefun-tasks" if spo else "")
            met = statistics.median(po) >= 20_000 and (ratio is None or ratio >= 10)
        elif ratio is not None:
            target, met = "≥ 10× statefun-tasks", ratio >= 10
        add(
            f"| B4 engine, in-process | {key.replace(':', ' ')}: pipeline function only (mean batch {batch}) | {_spread(po)} completions/s | {peer} | {_fmt(ratio, 1)}× | {target} | {_ok(met)} |"
        )
        if e2e:
            add(
                f"| B4 engine, in-process | {key.replace(':', ' ')}: end-to-end `PipelineEnvironment.in_process` (tasks run) | {_spread(e2e)} completions/s | — | — | — | |"
            )
    for key, row in pshapes.items():
        po = [r["completions_per_s"] for r in row.get("pipeline_only", [])]
        srow = sshapes.get(key)
        spo = [r["completions_per_s"] for r in srow["pipeline_only"]] if srow else []
        ratio = statistics.median(po) / statistics.median(spo) if po and spo else None
        add(
            f"| B4 like-for-like | {key.replace(':', ' ')}: pipeline function only, **both on pure-Python protobuf** | {_spread(po)} completions/s | "
            f"{_spread(spo, 1)}/s | {_fmt(ratio, 1)}× | — | |"
        )
    add("")
    add("Notes:")
    bt = rt.get("buffer_timeout_ms")
    buffer_timeout = (
        f"{bt} ms" if bt is not None else "the launcher's default, 5 ms (Flink's own is 100 ms)"
    )
    add(
        "- B1/B2/B3 time a submission through the Kafka client to its result (`env.submit_async`), on `PipelineEnvironment.start_local` "
        f"(own run dir and ports: Kafka {_get(rt, 'ports', 'kafka')}, REST {_get(rt, 'ports', 'rest')}, worker {_get(rt, 'ports', 'worker')}); "
        "the worker and the client share one Python process and event loop, as `start_local` arranges it. "
        f"Flink buffer timeout: {buffer_timeout}."
    )
    add(
        "- B3 on flink-tasks submits an orchestrator task (`fan_out.send(n, num_stages).continue_with(count)`) that builds the fan-out inside the worker "
        "(a 100,000-task request would exceed Kafka's 1 MiB record), so every size exercises the engine's staging (automatic above "
        "`EngineSettings.auto_stage_threshold` = 100 chains). Celery submits `group(...)` from the client and counts there (a `chord` stalled at "
        "10,000 in our trials). 100,000-child rows are single runs (minutes each); the smaller sizes have the usual repetitions. "
        "Above 10,000 children (`bench.tasks.FAN_OUT_LEAF`) an orchestrator of orchestrators builds leaves of 10,000 "
        "(`fan_out_tree.send(n).continue_with(total)`): one orchestrator that outlives the worker's inline wait returns its pipeline "
        "over the task-reports topic, a Kafka record of at most 1 MiB by default (~55 bytes a child)."
    )
    add(
        "- B4 pipeline-only: `Worker.handle` (flink-tasks) / the SDK's `RequestReplyHandler` (statefun-tasks) fed `ToFunction` batches by "
        "bench/_router.py, which answers task requests itself at once; results queue per address while a call is in flight (≤ 1,000 per batch, "
        "StateFun's `maxNumBatchRequests`); completions/s = tasks ÷ time inside the handler. statefun-tasks' engine re-parses its whole "
        "pipeline state for every message, so its cost per task grows with N: it is run at N = 1,000 with fewer repetitions "
        f"({sft.get('reps', '?')}, no warm-up), and flink-tasks is run at the same N for the ratio."
    )
    from bench import topology_report

    cdf_png = png_path.with_name("latency_cdf.png")
    if topology_report.cdf_plot(results, cdf_png):
        results["cdf_png"] = str(cdf_png)
    lines += ["", *topology_report.section(results)]
    profile = Path(results.get("profile_file", ""))
    if profile.is_file():
        add("")
        add(
            f"## Profile: pipeline function, fan-out of 10,000 (cProfile, top by own time; full file {profile.name})"
        )
        add("")
        add("```")
        text = profile.read_text().splitlines()
        add("\n".join(text[:40]))
        add("```")
    md_path.write_text("\n".join(lines) + "\n")
    _plot(per_child, shapes, sshapes, png_path)


def _plot(
    per_child: dict[str, dict[int, float]],
    shapes: dict[str, Any],
    sshapes: dict[str, Any],
    png_path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = {
        "auto": "flink-tasks start_local, automatic staging",
        "num_stages": "flink-tasks start_local, num_stages=10",
        "topology auto": "flink-tasks serve --workers 2, automatic staging",
        "topology num_stages": "flink-tasks serve --workers 2, num_stages=10",
        "celery group": "Celery group (Redis)",
    }
    for variant, costs in per_child.items():
        xs = sorted(costs)
        ax1.plot(xs, [costs[x] for x in xs], marker="o", label=labels.get(variant, variant))
    ax1.set_xscale("log")
    ax1.set_xlabel("children in the fan-out")
    ax1.set_ylabel("wall time per child (µs)")
    ax1.set_title("B3: cost per child, real runtime (lower is better)")
    ax1.set_ylim(bottom=0)
    ax1.legend()
    ax1.grid(True, alpha=0.3)
    names, ours, theirs = [], [], []
    for key, row in shapes.items():
        po = [r["completions_per_s"] for r in row.get("pipeline_only", [])]
        srow = sshapes.get(key)
        names.append(key.replace(":", " "))
        ours.append(statistics.median(po) if po else 0)
        theirs.append(
            statistics.median(r["completions_per_s"] for r in srow["pipeline_only"]) if srow else 0
        )
    xs = range(len(names))
    ax2.bar([x - 0.2 for x in xs], ours, width=0.4, label="flink-tasks")
    ax2.bar([x + 0.2 for x in xs], theirs, width=0.4, label="statefun-tasks 0.9.93")
    ax2.set_xticks(list(xs), names)
    ax2.set_yscale("log")
    ax2.set_ylabel("task completions / s (log)")
    ax2.set_title("B4: pipeline function in-process")
    ax2.legend()
    ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
