"""The ``ngff-writer`` command line (an edge: it uses the public API only)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .errors import NgffWriterError
from .output import open_output

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
    with open_output(args.out, mode="r") as out:
        progress = out.status()
    if args.json:
        print(json.dumps({"images": [p.to_json() for p in progress]}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("image", "samples", "blocks", "levels", "status")
    for p in progress:
        table.add_row(p.name, f"{p.done}/{p.total}", f"{p.blocks_done}/{p.blocks_total}",
                      str(p.levels), "complete" if p.complete else "in progress")
    Console().print(table)
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
