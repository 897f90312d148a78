# ruff: noqa: E501, RUF001
"""The "Users' topology (issue 16)" section of bench/results.md and bench/latency_cdf.png.

`section(results)` renders from the collected JSON (`all.json` of `python -m bench.run`: keys
`topology`, `celery_b5`, and for the same-run comparisons `celery` and `realtime`);
`python -m bench.topology_report --from bench/out/all.json` puts the section into an existing
bench/results.md (replacing an earlier one) without regenerating the rest.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

HEADING = "## Users' topology (issue 16)"
MIB = 1024 * 1024


def _fmt(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _ok(flag: bool | None) -> str:
    return "—" if flag is None else ("met" if flag else "**missed**")


def _x(ratio: float | None, what: str = "") -> str:
    return "—" if ratio is None else f"{ratio:,.2f}×{what}"


def _mib(x: int | None) -> str:
    return "—" if not x else f"{x / MIB:,.0f} MiB"


def _lat(d: dict[str, Any] | None) -> str:
    if not d:
        return "—"
    return (
        f"p50 {_fmt(d['p50_ms'], 1)} / p95 {_fmt(d['p95_ms'], 1)} / p99 {_fmt(d['p99_ms'], 1)} ms"
    )


def _memory(m: dict[str, Any] | None) -> str:
    if not m:
        return "— | — | — | —"
    heap = _mib(m.get("jvm_heap_used_peak_bytes"))
    cp = m.get("checkpoint_state_size_peak_bytes")
    return (
        f"{_mib(m.get('worker_rss_peak_bytes'))} ({m.get('worker_processes_max')} processes) | "
        f"{_mib(m.get('jvm_rss_peak_bytes'))} | {heap} | "
        f"{_fmt(cp / MIB, 1) + ' MiB' if cp else '—'}"
    )


_CPU_GROUPS = ("statefun_jvm", "kafka", "serve", "clients")


def _cpu(row: dict[str, Any] | None, groups: tuple[str, ...] = _CPU_GROUPS) -> str | None:
    """CPU ms per task attempt by process group, or None when the phase has no such figure."""
    cpu = (row or {}).get("cpu") or {}
    seconds, tasks = cpu.get("seconds"), cpu.get("task_attempts")
    if not seconds or not tasks:
        return None
    per = [seconds[group] * 1000 / tasks if group in seconds else None for group in groups]
    cells = " | ".join("—" if ms is None else f"{ms:.2f}" for ms in per)
    return f"{tasks:,.0f} | {cells} | **{sum(ms or 0.0 for ms in per):.2f}**"


def _cpu_table(
    add: Any, top: dict[str, Any], opt: dict[str, Any], celery_b5: dict[str, Any] | None
) -> None:
    rows = [("B1", top.get("b1")), ("B2", top.get("b2"))]
    rows += [(f"{p.upper()}, opt-in settings", opt.get(p)) for p in ("b1", "b2")]
    rows += [(f"B5 {reuse}", row) for reuse, row in (top.get("b5") or {}).items()]
    rendered = [(name, _cpu(row)) for name, row in rows]
    # Celery's groups in the same columns: Redis as the broker, its worker as the task runner
    celery = _cpu(celery_b5, ("-", "redis", "celery_worker", "clients"))
    if celery:
        rendered.append(("Celery B5 (Redis in the Kafka column, its worker in serve's)", celery))
    rendered = [(name, cells) for name, cells in rendered if cells]
    if not rendered:
        return
    add("")
    add(
        "CPU per task attempt, by process, from the clients' GO to the last client's exit "
        "(bench/_cpu.py; the task attempts from serve's /metrics; warm-up excluded):"
    )
    add("")
    add("| phase | task attempts | StateFun JVM ms | Kafka ms | serve ms | clients ms | total ms |")
    add("|---|---|---|---|---|---|---|")
    for name, cells in rendered:
        add(f"| {name} | {cells} |")


def _loadavg(step: dict[str, Any]) -> str:
    return f"{' '.join(step.get('loadavg_start', []))} at its start, {' '.join(step.get('loadavg_end', []))} at its end"


def section(results: dict[str, Any]) -> list[str]:
    top = results.get("topology") or {}
    cb5 = (results.get("celery_b5") or {}).get("b5")
    cel = results.get("celery") or {}
    alo = (results.get("realtime") or {}).get("alo") or {}
    if not top:
        return []
    lines: list[str] = []
    add = lines.append
    m = results.get("machine", {})
    cb5_meta = results.get("celery_b5") or {}
    add(HEADING)
    add("")
    add(
        f"Run {results.get('started', '?')} with `{results.get('command', 'python -m bench.run')}`; "
        f"{m.get('cores', '?')} cores ({m.get('cpu', '?')}). Load average (`/proc/loadavg`, 1/5/15 min): "
        f"{_loadavg(top)} during the topology step"
        + (f", {_loadavg(cb5_meta)} during the Celery B5 step" if cb5_meta else "")
        + ". Absolute numbers move with that load; the ratios (same run) less so."
    )
    add("")
    add(
        f"Topology: `flink-tasks serve bench.tasks:tasks --workers {top.get('workers')} --pool {top.get('pool')}` "
        "(its own process group: a supervisor, the worker processes and their pool children), the local Kafka + StateFun "
        f"(`LocalRuntime`, own run dir and ports: Kafka {top.get('ports', {}).get('kafka')}, REST {top.get('ports', {}).get('rest')}, "
        f"worker {top.get('ports', {}).get('worker')}; at-least-once egress, checkpoint {top.get('checkpoint_interval_ms')} ms), and every "
        "client a `FlinkTasksClient` in an OS process of its own (`bench/topology_client.py`), started by the bench after the "
        f"runtime and released together. B1–B3 clients use `pipeline_reuse={top.get('reuse')!r}` as `start_local` does. "
        "Celery: the worker setup of the Celery bench (prefork, concurrency 2, Redis broker + backend), its clients in their own "
        "processes too (`bench/peers/celery_topology.py`)."
    )
    add("")
    if results.get("topology_note"):
        add(f"Note: {results['topology_note']}")
        add("")
    add("| bench | shape | flink-tasks | Celery, same run | flink-tasks / Celery | target | |")
    add("|---|---|---|---|---|---|---|")
    # B5
    for reuse, row in (top.get("b5") or {}).items():
        label = f"`pipeline_reuse={reuse}`" + (
            " (the client's default: a status lookup per submit)"
            if reuse == "attach"
            else " (no lookup)"
        )
        shape = f"{row['n']:,} single-task pipelines `inc.send(i)` from {row['clients']} client processes at once, {label}"
        ratio = row["tasks_per_s"] / cb5["tasks_per_s"] if cb5 else None
        add(
            f"| B5 throughput | {shape} | {_fmt(row['tasks_per_s'])} tasks/s ({_fmt(row['wall_s'], 1)} s) | "
            f"{_fmt(cb5['tasks_per_s']) + ' tasks/s' if cb5 else '—'} | {_x(ratio)} | ≥ 3× Celery | {_ok(ratio >= 3 if ratio else None)} |"
        )
        p99_ratio = row["p99_ms"] / cb5["p99_ms"] if cb5 else None
        add(
            f"| B5 submit-to-result latency | same run | {_lat(row)} | {_lat(cb5)} | {_x(p99_ratio, ' (p99)')} | p99 ≤ Celery's | "
            f"{_ok(p99_ratio <= 1 if p99_ratio else None)} |"
        )
    # B1
    cb1 = cel.get("b1") or {}
    c_rate = statistics.median(cb1["tasks_per_s"]) if cb1.get("tasks_per_s") else None
    opt = results.get("topology_opt_in") or {}
    opt_label = f"topology, opt-in inlined chain steps ({opt.get('inline_chain_steps')})"
    top_label = f"topology, serve's defaults ({top.get('task_buckets', '?')} task buckets)"
    for source, b1 in (
        (top_label, top.get("b1")),
        (opt_label, opt.get("b1")),
        ("`start_local` (one process)", alo.get("b1")),
    ):
        judged = source.startswith("topology")
        for label in ("none", "100"):
            rates = ((b1 or {}).get(label) or {}).get("tasks_per_s")
            if not rates:
                continue
            rate = statistics.median(rates)
            ratio = rate / c_rate if c_rate else None
            target = "≥ 6× Celery" if judged else "(extra row)"
            add(
                f"| B1 fan-out, {source} | in_parallel of 1,000, max_parallelism={label}, median of {len(rates)} | {_fmt(rate)} tasks/s | "
                f"{_fmt(c_rate) + ' tasks/s' if c_rate else '—'} | {_x(ratio)} | {target} | "
                f"{_ok(ratio >= 6 if ratio and judged else None)} |"
            )
    # B2
    cb2 = cel.get("b2")
    for source, b2 in (
        (top_label, top.get("b2")),
        (opt_label, opt.get("b2")),
        ("`start_local` (one process)", alo.get("b2")),
    ):
        if not b2:
            continue
        p50 = b2["p50_ms"] / cb2["p50_ms"] if cb2 else None
        p99 = b2["p99_ms"] / cb2["p99_ms"] if cb2 else None
        topo = source.startswith("topology")
        add(
            f"| B2 chain latency, {source} | 10-step continue_with, {b2['runs']} runs one after another | {_lat(b2)} | {_lat(cb2)} | "
            f"{_x(p50, ' (p50)')}, {_x(p99, ' (p99)')} | {'p50 ≤ 0.7×, p99 ≤ 1×' if topo else '(extra row)'} | "
            f"{_ok(p50 <= 0.7 and p99 <= 1 if topo and p50 and p99 else None)} |"
        )
    # B3
    cb3 = cel.get("b3") or {}
    per_child: dict[str, dict[int, float]] = {}
    for source, b3 in (("topology", top.get("b3")), ("`start_local` (one process)", alo.get("b3"))):
        for row in sorted((b3 or {}).values(), key=lambda r: (r["variant"], r["n"])):
            n = row["n"]
            if source == "topology":
                per_child.setdefault(row["variant"], {})[n] = row["us_per_child"]
            crow = cb3.get(f"group/{n}")
            ratio = crow["us_per_child"] / row["us_per_child"] if crow else None
            variant = (
                "automatic staging"
                if row["variant"] == "auto"
                else f"num_stages={row['num_stages']}"
            )
            add(
                f"| B3 scale, {source} | orchestrator → in_parallel of {n:,} ({variant}) → count; {len(row['wall_s'])} run(s) | "
                f"{_fmt(row['median_wall_s'], 2)} s, {_fmt(row['us_per_child'])} µs/child | "
                f"{_fmt(crow['median_wall_s'], 2) + ' s' if crow else '—'} | {_fmt(ratio, 2) + '× faster' if ratio else '—'} | — | |"
            )
    for variant, costs in per_child.items():
        if 1000 in costs and max(costs) > 1000:
            big = max(costs)
            growth = costs[big] / costs[1000]
            met = growth <= 1.2 if big >= 1_000_000 else None
            add(
                f"| B3 flatness, topology | {variant}: µs/child at {big:,} ÷ at 1,000 | {growth:.2f} | — | — | ≤ 1.2 at 1,000,000 | "
                f"{_ok(met) if met is not None else 'not measured at 1,000,000'} |"
            )
    add("")
    add("Memory, per phase of the topology run (peaks while the phase ran; bench/_memory.py):")
    add("")
    add(
        "| phase | worker RSS, sum over serve's processes | StateFun JVM RSS | JVM heap used (Flink REST) | checkpoint size (latest completed) |"
    )
    add("|---|---|---|---|---|")
    if top.get("b1"):
        add(f"| B1 | {_memory(top['b1'].get('memory'))} |")
    if top.get("b2"):
        add(f"| B2 | {_memory(top['b2'].get('memory'))} |")
    for phase in ("b1", "b2"):
        if opt.get(phase):
            add(f"| {phase.upper()}, opt-in settings | {_memory(opt[phase].get('memory'))} |")
    seen: set[int] = set()
    for row in sorted((top.get("b3") or {}).values(), key=lambda r: r["n"]):
        if row["n"] not in seen:  # both variants of a size ran in one window
            seen.add(row["n"])
            add(f"| B3 n={row['n']:,} (both variants) | {_memory(row.get('memory'))} |")
    for reuse, row in (top.get("b5") or {}).items():
        add(f"| B5 {reuse} | {_memory(row.get('memory'))} |")
    _cpu_table(add, top, opt, (results.get("celery_b5") or {}).get("b5"))
    add("")
    add(
        "- Worker RSS adds VmRSS over every process of serve's session (supervisor, worker processes, fork servers, pool "
        "children): forked children share pages, so it is an upper bound. JVM heap used is Flink's "
        "`Status.JVM.Memory.Heap.Used`, which Flink refreshes at most every 10 s: a peak of a few samples. Checkpoint size is "
        "`state_size` of the latest completed checkpoint (`/jobs/<jid>/checkpoints`), the largest seen during the phase; "
        "finished pipelines keep their status and result for the retention period (24 h), so it grows over the run."
    )
    if opt:
        add(
            "- Opt-in rows: `FLINK_TASKS_INLINE_CHAIN_STEPS` (the worker runs a chain's next steps in "
            "the same call), off by default because inlined steps cannot be cancelled or paused between "
            "steps (docs/deploy.md). Both topology rows run serve's default task buckets (8: the tasks a "
            "group starts travel as one message per bucket, a request carries a bucket's tasks, their "
            "results return packed). Targets are judged on both topology rows."
        )
    add(
        "- B5 latency is from just before the submit call to the moment the result reaches the client process: for flink-tasks "
        "when the client's I/O thread resolves the pipeline's future; for Celery when the result's message arrives on the Redis "
        "channel its result consumer listens on (a listener thread in each client process stamps it), so neither side is "
        "charged for its client being busy submitting. Throughput runs from the earliest submit in any process to the latest "
        "result in any process."
    )
    add("")
    if Path(results.get("cdf_png", "")).name:
        add(f"![latency CDF](./{Path(results['cdf_png']).name})")
        add("")
    return lines


def cdf_plot(results: dict[str, Any], png_path: Path) -> bool:
    """B2 and B5 latency CDFs; False when there is nothing to plot."""
    top = results.get("topology") or {}
    cel = results.get("celery") or {}
    alo = (results.get("realtime") or {}).get("alo") or {}
    b2_series = {
        "flink-tasks, users' topology": (top.get("b2") or {}).get("latencies_ms"),
        "flink-tasks, topology, inlined chain steps (opt-in)": (
            ((results.get("topology_opt_in") or {}).get("b2") or {}).get("latencies_ms")
        ),
        "flink-tasks, start_local": (alo.get("b2") or {}).get("latencies_ms"),
        "Celery chain": (cel.get("b2") or {}).get("latencies_ms"),
    }
    b5_series = {
        f"flink-tasks, pipeline_reuse={reuse}": row.get("latencies_ms")
        for reuse, row in (top.get("b5") or {}).items()
    }
    b5_series["Celery apply_async"] = ((results.get("celery_b5") or {}).get("b5") or {}).get(
        "latencies_ms"
    )
    first = next(iter((top.get("b5") or {}).values()), None)
    b5_title = f"{first['n']:,} single tasks from {first['clients']} processes" if first else "B5"
    if not any(b2_series.values()) and not any(b5_series.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, title, series in (
        (axes[0], "B2: 10-step chain, submit to result", b2_series),
        (axes[1], f"B5: {b5_title}, submit to result", b5_series),
    ):
        for label, values in series.items():
            if values:
                xs = sorted(values)
                ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("fraction of runs ≤ x")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return True


def splice(md_path: Path, lines: list[str]) -> None:
    """Put the section into `md_path`, replacing an earlier one (up to the next `## `)."""
    text = md_path.read_text().splitlines() if md_path.exists() else []
    if HEADING in text:
        start = text.index(HEADING)
        end = next((i for i in range(start + 1, len(text)) if text[i].startswith("## ")), len(text))
        text[start:end] = lines
    else:
        text += ["", *lines]
    md_path.write_text("\n".join(text).rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="source", default="bench/out/all.json")
    parser.add_argument("--into", default="bench/results.md")
    parser.add_argument("--png", default="bench/latency_cdf.png")
    args = parser.parse_args()
    source = Path(args.source)
    if source.is_dir():  # a run stopped before its all.json: the steps' own files
        results = {"started": "?", "command": "(steps of an interrupted run)"}
        for key, name in (
            ("realtime", "realtime"),
            ("celery", "celery"),
            ("topology", "topology"),
            ("celery_b5", "celery_b5"),
        ):
            if (source / f"{name}.json").exists():
                results[key] = json.loads((source / f"{name}.json").read_text())
    else:
        results = json.loads(source.read_text())
    if cdf_plot(results, Path(args.png)):
        results["cdf_png"] = args.png
    splice(Path(args.into), section(results))


if __name__ == "__main__":
    main()
