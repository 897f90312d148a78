"""``flink-tasks module-yaml``: render the StateFun module for a deployment."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from flink_tasks.cli.local import Subparsers, _add_endpoint


def register_module_yaml(subparsers: Subparsers) -> None:
    """``flink-tasks module-yaml``: render StateFun's module.yaml for a deployment target."""
    cmd = subparsers.add_parser(
        "module-yaml",
        help="render StateFun's module.yaml for local, compose or kubernetes",
        description="Render the StateFun module (endpoints, Kafka ingress and egress) from the "
        "settings: --target local prints it for the FLINK_TASKS_* environment; compose and "
        "kubernetes (re)write module.yaml (and, for compose, flink-conf.yaml) next to the "
        "target's settings.env (--dir). --check only compares and exits 1 when stale.",
    )
    cmd.add_argument("--target", choices=["local", "compose", "kubernetes"], default="local")
    cmd.add_argument(
        "--check", action="store_true", help="exit 1 if the committed files are not up to date"
    )
    cmd.add_argument("--stdout", action="store_true", help="print module.yaml, write nothing")
    _add_endpoint(cmd)
    cmd.add_argument(
        "--dir",
        type=Path,
        help="compose/kubernetes: the folder holding settings.env, where the rendered files "
        "go (default deploy/<target> of the checkout, else ./deploy/<target>)",
    )
    cmd.set_defaults(handler=cmd_module_yaml)


def cmd_module_yaml(args: argparse.Namespace) -> int:
    from flink_tasks.runtime.module_yaml import deploy_target

    try:
        target = deploy_target(args.target, directory=args.dir)
        if args.endpoint:
            if target.directory is not None and not args.stdout:
                raise ValueError(
                    "--endpoint would make the rendered files disagree with settings.env: "
                    "set FLINK_TASKS_ENDPOINTS there instead (or add --stdout)"
                )
            pools = target.settings.replace(endpoints=tuple(args.endpoint))
            target = dataclasses.replace(target, settings=pools)
    except (OSError, ValueError) as exc:
        print(f"flink-tasks module-yaml: error: {exc}", file=sys.stderr)
        return 1
    files = target.rendered_files()
    if args.check:
        stale = target.stale_files()
        for path in stale:
            print(f"stale: {path} (run: flink-tasks module-yaml --target {args.target})")
        if not stale:
            print(f"up to date: {', '.join(str(p) for p in files) or 'nothing committed'}")
        return 1 if stale else 0
    if args.stdout or not files:
        sys.stdout.write(target.module_yaml())
        return 0
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0
