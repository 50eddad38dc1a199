"""The ``ngff-writer`` command line (an edge: it uses the public API only)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .errors import NgffWriterError
from .output import Progress, open_output
from .repair import repair_output

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    names = run_demo(args.out, overwrite=args.overwrite, show_progress=not args.quiet)
    print(f"Wrote {len(names)} OME-Zarr images to {args.out}:")
    for name in names:
        print(f"  {args.out}/{name}")
    print("\nOpen one in napari (pip install 'napari[all]' napari-ome-zarr):")
    print(f"  napari --plugin napari-ome-zarr {args.out}/{names[0]}")
    print(f"Progress and status:\n  ngff-writer status {args.out}")
    return 0


def _status(args: argparse.Namespace) -> int:
    rows: list[Progress | tuple[str, NgffWriterError]] = []
    with open_output(args.out, mode="r") as out:
        for name in out.images():
            try:
                rows.append(out[name].progress())
            except NgffWriterError as exc:  # one damaged image must not hide the others
                rows.append((name, exc))
    failed = any(isinstance(r, tuple) for r in rows)
    if args.json:
        entries = [r.to_json() if isinstance(r, Progress) else {"path": r[0], "error": str(r[1])}
                   for r in rows]
        print(json.dumps({"images": entries}, indent=2))
        return int(failed)
    from rich.console import Console
    from rich.table import Table

    table = Table("image", "samples", "blocks", "levels", "status")
    for r in rows:
        if isinstance(r, tuple):
            table.add_row(r[0], "", "", "", f"[red]{type(r[1]).__name__}: {r[1]}[/red]")
            continue
        table.add_row(r.name, f"{r.done}/{r.total}", f"{r.blocks_done}/{r.blocks_total}",
                      str(r.levels), "complete" if r.complete else "in progress")
    Console().print(table)
    if failed:
        print("Some images cannot be read; `ngff-writer repair` fixes what it can.", file=sys.stderr)
    return int(failed)


def _repair(args: argparse.Namespace) -> int:
    done = repair_output(args.out)
    if not done:
        print(f"{args.out}: nothing to repair")
    for name, actions in done.items():
        print(f"{name or '(root)'}:")
        for action in actions:
            print(f"  - {action}")
    if done:
        print("Resume the export (write what is pending again) to complete the images.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ngff-writer``."""
    parser = argparse.ArgumentParser(
        prog="ngff-writer", description="Stream predictions into OME-Zarr and inspect outputs."
    )
    parser.add_argument("--version", action="version", version=f"ngff-writer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write a demo export of synthetic predictions")
    demo.add_argument("out", help="output directory to create")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing output")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    status = sub.add_parser("status", help="show the progress of every image in an output")
    status.add_argument("out", help="output directory or URL")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    repair = sub.add_parser(
        "repair", help="make damaged images resumable: rebuild unreadable metadata, drop unreadable "
        "log segments and fragments, record stored data no record lists, delete temporary files")
    repair.add_argument("out", help="output directory or URL (run it while no writer is running)")
    repair.set_defaults(func=_repair)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NgffWriterError as exc:
        print(f"ngff-writer: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
