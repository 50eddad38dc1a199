"""The ``ngff-writer`` command line (an edge: it uses the public API and the readers only).

Built on click, which dask already brings (so it costs no dependency), for its help
pages, its usage errors (exit 2) and its shell completion.

Every command that reads takes a PATH: an output, one image in it, a single-image store
(``x.ome.zarr``), or any directory holding such stores at any depth (CAREamics writes
``dirpath/<dir>/<stem>.ome.zarr``); images are shown by their path relative to PATH.
"""

from __future__ import annotations

import faulthandler
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from .._ngff.describe import ImageInfo, describe_image
from .._ngff.discover import Found, scan
from .._ngff.plate import PlateProgress, plates_among
from .._output.handle import Output, open_output
from .._output.image import Image, Progress
from .._output.repair import repair_output
from .._output.validate import Validation, validate_image
from .._storage.stores import open_store
from .._version import __version__
from ..errors import (
    NgffWriterError,
    NotAnOutputError,
    OutputExistsError,
    OutputInUseError,
    OutputNotFoundError,
    SpecError,
    StoreError,
)

__all__ = ["EXIT_NO_IMAGE", "EXIT_PROBLEM", "EXIT_STORE", "EXIT_USAGE", "main"]

#: The command did its work and found something wrong: an image invalid, incomplete or
#: unreadable (status, validate, finalize).
EXIT_PROBLEM = 1
#: Wrong arguments, or a PATH that does not exist (click's own code for usage errors).
EXIT_USAGE = 2
#: PATH exists but holds no OME-Zarr image (not zarr at all, or zarr without images).
EXIT_NO_IMAGE = 3
#: The store cannot be reached or read (after the timeouts and retries).
EXIT_STORE = 4

EXIT_CODES = f"""\b
Exit codes: 0 success; {EXIT_PROBLEM} an image is invalid, incomplete or unreadable
(set: not final); {EXIT_USAGE} usage error, no such path, or (demo) an existing output;
{EXIT_NO_IMAGE} no OME-Zarr image at PATH (an empty or plain folder, a file);
{EXIT_STORE} the store cannot be reached or read; 130 interrupted."""


class Failure(click.ClickException):
    """One line on stderr and an exit code, no traceback."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar, yet reads it from the instance: one per failure.
        self.exit_code = code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"ngff-writer: error: {self.format_message()}", err=True)


def _errors[**P, R](command: Callable[P, R]) -> Callable[P, R]:
    """Turn the library's typed errors into one line and a documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (OutputNotFoundError, OutputExistsError, OutputInUseError) as exc:
            raise Failure(str(exc), EXIT_USAGE) from None
        except NotAnOutputError as exc:
            raise Failure(str(exc), EXIT_NO_IMAGE) from None
        except StoreError as exc:
            raise Failure(str(exc), EXIT_STORE) from None
        except NgffWriterError as exc:
            raise Failure(str(exc), EXIT_PROBLEM) from None

    return wrapper


# ---- what is at PATH ----------------------------------------------------------------------------
@dataclass
class Target:
    """The images found at PATH, and the output that opens ngff-writer's among them."""

    path: str
    store: Any
    found: list[Found]
    output: Output | None

    def shown(self, found: Found | str) -> str:
        path = found.path if isinstance(found, Found) else found
        return path or "."

    def image(self, found: Found) -> Image:
        """The image of ngff-writer's that ``found`` is (``found.ngff_writer``)."""
        assert self.output is not None  # opened() opens it when it finds one of ngff-writer's images
        return self.output.image(found.path)


def check_local_path(path: str) -> None:
    """The exit codes every command gives for a local PATH: 2 if missing, 3 if a file."""
    if "://" in path:
        return
    if not Path(path).exists():
        raise Failure(f"no such path: {path}", EXIT_USAGE)
    if not Path(path).is_dir():
        raise Failure(f"{path} is a file, not an OME-Zarr store: no OME-Zarr image there", EXIT_NO_IMAGE)


@contextmanager
def opened(path: str, options: dict[str, Any] | None, mode: Literal["r", "a"] = "r") -> Iterator[Target]:
    """Open PATH for reading (or ``mode="a"`` to finalize); fail with the right exit code."""
    check_local_path(path)
    store = open_store(path, "r", options)
    found = scan(store)
    if not found:
        raise Failure(f"{path} holds no OME-Zarr image", EXIT_NO_IMAGE)
    output = None
    if any(f.ngff_writer for f in found):
        output = open_output(path, mode, storage_options=options)
    target = Target(path, output.store if output else store, found, output)
    try:
        yield target
    finally:
        if output is not None:
            output.close()


def _options(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        options = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(options, dict):
        raise click.BadParameter("must be a JSON object")
    return options


def path_argument(command: Callable[..., Any]) -> Callable[..., Any]:
    """PATH and --storage-options, shared by every command that reads an output."""
    command = click.option(
        "--storage-options", "-o", "options", metavar="JSON", callback=lambda c, p, v: _options(v),
        help='fsspec options for a URL, e.g. \'{"client_kwargs": {"endpoint_url": "http://..."}}\'.',
    )(command)
    return click.argument("path")(command)


# ---- commands -----------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="ngff-writer")
def cli() -> None:
    """Stream predictions into OME-Zarr, and inspect, check and finish the outputs.

    \b
    PATH is an output, one image in it, a single-image store (x.ome.zarr), or a
    directory holding such stores at any depth; a URL (s3://bucket/out.zarr) works too.
    """


@cli.command(epilog="\b\nExample:\n  ngff-writer demo demo-output --overwrite")
@click.argument("out")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_errors
def demo(out: str, overwrite: bool, quiet: bool) -> None:
    """Write a demo export of synthetic predictions to OUT."""
    from ._demo import run_demo

    names = run_demo(out, overwrite=overwrite, show_progress=not quiet)
    click.echo(f"Wrote {len(names)} OME-Zarr images to {out}:")
    for name in names:
        click.echo(f"  {out}/{name}")
    click.echo("\nOpen one in napari (pip install 'napari[all]' napari-ome-zarr):")
    click.echo(f"  napari --plugin napari-ome-zarr {out}/{names[0]}")
    click.echo(f"Progress and status:\n  ngff-writer status {out}")


def _progress_rows(target: Target) -> list[tuple[Found, Progress | str]]:
    rows: list[tuple[Found, Progress | str]] = []
    for f in target.found:
        if not f.ngff_writer:
            rows.append((f, "written by another tool"))
            continue
        try:
            rows.append((f, target.image(f).progress()))
        except NgffWriterError as exc:  # one damaged image must not hide the others
            rows.append((f, f"{type(exc).__name__}: {exc}"))
    return rows


def _plate_rows(target: Target, rows: list[tuple[Found, Progress | str]]) -> list[PlateProgress]:
    """Plates whose fields are among the images found, their progress from those rows."""
    if target.output is None:
        return []
    done = {f.path: isinstance(r, Progress) and r.complete for f, r in rows}
    return [target.output.plate(name).layout.progress(done)
            for name in plates_among(target.store, [f.path for f in target.found if f.ngff_writer])]


@cli.command(epilog="""\b
Examples:
  ngff-writer status predictions/                  # every image below, CAREamics layout too
  ngff-writer status out.zarr/embryo --json
  ngff-writer status s3://bucket/out.zarr --watch -o '{"anon": true}'""")
@path_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {images: [{path, complete, ...}]}.")
@click.option("--watch", is_flag=True,
              help="Follow progress while writers run: live bars in a terminal, a line per change "
                   "otherwise.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.05),
              help="Seconds between refreshes of --watch.")
@click.option("--stall", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="--watch: warn once when no block was stored for this many minutes.")
@click.option("--until-complete/--forever", default=True, show_default=True,
              help="--watch: exit once every image is complete, or watch until Ctrl-C.")
@_errors
def status(path: str, options: dict[str, Any] | None, as_json: bool, watch: bool, interval: float,
           stall: float, until_complete: bool) -> None:
    """Show how far every image at PATH is (exit 1 if one cannot be read)."""
    if watch:
        _watch(path, options, interval, stall * 60, until_complete)
        return
    with opened(path, options) as target:
        rows = _progress_rows(target)
        plates = _plate_rows(target, rows)
    failed = any(isinstance(r, str) and f.ngff_writer for f, r in rows)
    if as_json:
        entries = [dict(r.to_json(), path=target.shown(f)) if isinstance(r, Progress)
                   else {"path": target.shown(f), "error" if f.ngff_writer else "note": r}
                   for f, r in rows]
        report: dict[str, Any] = {"images": entries}
        if plates:
            report["plates"] = [dict(p.to_json(), path=target.shown(p.name)) for p in plates]
        click.echo(json.dumps(report, indent=2))
    else:
        from rich.table import Table

        titled = any(isinstance(r, Progress) and r.title for _, r in rows)
        table = Table("image", *(["title"] if titled else []), "samples", "blocks", "levels", "status")
        for f, r in rows:
            title = [r.title or "" if isinstance(r, Progress) else ""] if titled else []
            if isinstance(r, str):
                table.add_row(target.shown(f), *title, "", "", "",
                              f"[red]{r}[/red]" if f.ngff_writer else r)
            else:
                table.add_row(target.shown(f), *title, f"{r.done}/{r.total}",
                              f"{r.blocks_done}/{r.blocks_total}", str(r.levels),
                              "complete" if r.complete else "in progress")
        _console().print(table)
        if plates:
            plate_table = Table("plate", "wells", "fields", "status")
            for p in plates:
                plate_table.add_row(target.shown(p.name), f"{p.wells_done}/{p.wells_total}",
                                    f"{p.fields_done}/{p.fields_total}",
                                    "complete" if p.complete else "in progress")
            _console().print(plate_table)
        if failed:
            click.echo(f"Some images cannot be read: run `ngff-writer repair {path}` (with no writer "
                       "running), then resume the export.", err=True)
    if failed:
        sys.exit(EXIT_PROBLEM)


def _watch(path: str, options: dict[str, Any] | None, interval: float, stall: float,
           until_complete: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
    from rich.progress import Progress as Bars

    console = _console()
    live = console.is_terminal  # elsewhere (a pipe, a log file) a plain line per change
    bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("blocks {task.fields[state]}"), console=console, disable=not live)
    tasks: dict[str, Any] = {}
    shown: dict[str, tuple[str, int, int | None]] = {}
    last_change, warned = time.monotonic(), False
    try:
        with opened(path, options) as target, bars:
            while True:
                # Images declared after the watch started are picked up too.
                target.found = [f for f in scan(target.store) if f.ngff_writer]
                pending = 0
                for f in target.found:
                    try:
                        p = target.image(f).progress()
                    except NgffWriterError as exc:
                        state, done, total = f"unreadable: {exc}", 0, None
                        pending += 1
                    else:
                        state = "complete" if p.complete else "in progress"
                        done, total = p.blocks_done, p.blocks_total
                        pending += not p.complete
                    if shown.get(f.path) != (state, done, total):
                        if f.path in shown:
                            last_change, warned = time.monotonic(), False
                        shown[f.path] = (state, done, total)
                        if not live:
                            click.echo(f"{target.shown(f)}: {done}/{total if total is not None else '?'} "
                                       f"blocks, {state}")
                    if f.path not in tasks:
                        tasks[f.path] = bars.add_task(target.shown(f), total=total, state=state)
                    bars.update(tasks[f.path], completed=done, total=total, state=state)
                if not pending and until_complete:
                    break
                idle = time.monotonic() - last_change
                if pending and idle >= stall and not warned:
                    warned = True
                    click.echo(f"no block stored for {idle / 60:.0f} minutes: is a writer still running? "
                               f"If the export stopped, resume it (or `ngff-writer finalize {path}` "
                               "finishes what is whole).", err=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        sys.exit(130)
    click.echo(f"{len(tasks)} image(s) complete.")


@cli.command(epilog="""\b
Examples:
  ngff-writer validate out.zarr
  ngff-writer validate predictions/ --partial --json""")
@path_argument
@click.option("--partial", is_flag=True,
              help="Accept images still being written (their bookkeeping is checked, not their end).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def validate(path: str, options: dict[str, Any] | None, partial: bool, as_json: bool) -> None:
    """Check every image at PATH: metadata, arrays, bookkeeping (exit 1 if one fails).

    \b
    Metadata: against the NGFF version it declares (ome-zarr-models).
    Arrays:   every level exists and matches the metadata (and the declaration:
              shapes, chunks, shards, dtype, scales).
    Bookkeeping: complete exactly when every block is recorded, and no log
              segments, fragments or temporary files left in a complete image.
    """
    with opened(path, options) as target:
        results: list[tuple[Found, Validation | None, str | None]] = []
        for f in target.found:
            image = None
            if f.ngff_writer:
                try:
                    image = target.image(f)
                except NgffWriterError as exc:
                    results.append((f, None, str(exc)))
                    continue
            results.append((f, validate_image(target.store, f.path, image, allow_incomplete=partial),
                            None))
    bad = sum(1 for _, v, err in results if err or v is None or not v.ok)
    if as_json:
        click.echo(json.dumps({"valid": not bad, "images": [
            dict(v.to_json(), path=target.shown(f)) if v else
            {"path": target.shown(f), "ok": False, "problems": [err], "notes": []}
            for f, v, err in results]}, indent=2))
    else:
        for f, v, err in results:
            ok = v is not None and v.ok
            click.echo(f"{'ok ' if ok else 'BAD'}  {target.shown(f)}")
            for line in ([err] if err else v.problems if v is not None else []):
                click.echo(f"       - {line}")
            for line in (v.notes if v else []):
                click.echo(f"       ({line})")
        click.echo(f"{len(results)} image(s): {len(results) - bad} valid"
                   + (f", {bad} with problems" if bad else ""))
    if bad:
        sys.exit(EXIT_PROBLEM)


def _console() -> Any:
    from rich.console import Console

    # Piped into a file or a log, rich would fold tables at 80 columns.
    return Console(width=None if sys.stdout.isatty() else 120)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@cli.command(epilog="""\b
Examples:
  ngff-writer info out.zarr
  ngff-writer info predictions/sample_0.ome.zarr --json""")
@path_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def info(path: str, options: dict[str, Any] | None, as_json: bool) -> None:
    """Describe every image at PATH: levels, chunks, codecs, sizes, channels, status."""
    with opened(path, options) as target:
        infos: list[tuple[Found, ImageInfo | None, str | None]] = []
        for f in target.found:
            try:
                infos.append((f, describe_image(target.store, f.path), None))
            except NgffWriterError as exc:
                infos.append((f, None, str(exc)))
    unreadable = any(i is None for _, i, _ in infos)
    if as_json:
        click.echo(json.dumps({"images": [
            dict(i.to_json(), path=target.shown(f)) if i else {"path": target.shown(f), "error": err}
            for f, i, err in infos]}, indent=2))
        if unreadable:
            sys.exit(EXIT_PROBLEM)  # an image described as unreadable (the table in cli.md)
        return
    from rich.markup import escape
    from rich.table import Table
    from rich.tree import Tree

    tree = Tree(f"[bold]{path}[/bold]")
    for f, i, err in infos:
        if i is None:
            tree.add(f"[bold]{target.shown(f)}[/bold]  [red]{err}[/red]")
            continue
        status = {"complete": "complete", "in_progress": "in progress"}.get(i.status or "", "")
        node = tree.add(f"[bold]{target.shown(f)}[/bold]  NGFF {i.ngff_version}, axes "
                        f"{''.join(i.axes)}, {i.written_by}" + (f", {status}" if status else "")
                        + (f", fingerprint {escape(i.fingerprint)}" if i.fingerprint else ""))
        table = Table("level", "shape", "chunks", "shards", "dtype", "codecs", "stored", "ratio",
                      box=None, pad_edge=False)
        for lv in i.levels:
            table.add_row(lv.path, "x".join(map(str, lv.shape)), "x".join(map(str, lv.chunks)),
                          "x".join(map(str, lv.shards)) if lv.shards else "-", lv.dtype,
                          ", ".join(lv.codecs) or "none", _size(lv.stored_bytes),
                          f"{lv.ratio:.2f}" if lv.ratio else "-")
        node.add(table)
        if i.layout:
            node.add(f"layout: {i.layout}")
        node.add(_placement(i))
        for c in i.channels:
            w = c.window or {}
            shown = [f"{v:.4g}" if isinstance(v, (int, float)) else "?"
                     for v in (w.get("start"), w.get("end"))]
            node.add(f"channel {c.label!r}: window {shown[0]} to {shown[1]}"
                     + (f", color {c.color}" if c.color else ""))
    _console().print(tree)
    if unreadable:
        sys.exit(EXIT_PROBLEM)


def _placement(info: ImageInfo) -> str:
    """Level 0's pixel size per axis with its unit, and the position of its first pixel if any."""
    level = info.levels[0] if info.levels else None
    if level is None or len(level.scale) != len(info.axes):
        return "pixel size: not in the metadata"
    units = info.units if len(info.units) == len(info.axes) else (None,) * len(info.axes)
    sizes = ", ".join(f"{a} {v:g}" + (f" {u}" if u else "")
                      for a, v, u in zip(info.axes, level.scale, units, strict=True) if a != "c")
    text = f"pixel size: {sizes}"
    if any(level.translation) and len(level.translation) == len(info.axes):
        text += "; first pixel at " + ", ".join(f"{a} {v:g}" for a, v in
                                                zip(info.axes, level.translation, strict=True) if v)
    return text


@cli.command(epilog="""\b
Example:
  ngff-writer finalize out.zarr     # after a crashed job: finish what is whole""")
@path_argument
@_errors
def finalize(path: str, options: dict[str, Any] | None) -> None:
    """Finalize every image at PATH whose blocks are all stored (exit 1 if one is not).

    Builds the pyramid chunks a dead writer left, completes chunks from saved
    fragments, writes contrast windows and marks the image complete. Lists the
    incomplete images with what they miss. Running it again changes nothing.
    """
    from rich.progress import Progress as Bars

    with opened(path, options, mode="a") as target:
        ours = [f for f in target.found if f.ngff_writer]
        lines: list[str] = []
        incomplete = 0
        with Bars(transient=True, disable=not sys.stderr.isatty()) as bars:
            task = bars.add_task("finalizing", total=len(ours))
            for f in ours:
                image = target.image(f)
                was_final = image.is_final
                if image.finalize():
                    lines.append(f"{target.shown(f)}: {'already final' if was_final else 'finalized'}")
                else:
                    incomplete += 1
                    p = image.progress()
                    missing = list(p.pending[:10])
                    more = f" and {len(p.pending) - 10} more" if len(p.pending) > 10 else ""
                    lines.append(f"{target.shown(f)}: incomplete, {p.done}/{p.total} samples, "
                                 f"{p.blocks_done}/{p.blocks_total} blocks; samples missing: "
                                 f"{', '.join(map(str, missing))}{more}")
                bars.advance(task)
    for line in lines:
        click.echo(line)
    others = len(target.found) - len(ours)
    if others:
        click.echo(f"({others} image(s) written by another tool left as they are)")
    if incomplete:
        click.echo("Write the missing samples (resume the export), then finalize again.", err=True)
        sys.exit(EXIT_PROBLEM)


def _pairs(values: tuple[str, ...]) -> list[tuple[float, float] | None] | None:
    """--window values: "START,END" per channel in order, "-" to keep one."""
    if not values:
        return None
    out: list[tuple[float, float] | None] = []
    for value in values:
        if value.strip() == "-":
            out.append(None)
            continue
        try:
            start, end = (float(v) for v in value.split(","))
        except ValueError:
            raise click.BadParameter(f"{value!r}: give START,END (e.g. 0,1500) or - to keep a window",
                                     param_hint="--window") from None
        out.append((start, end))
    return out


@cli.command("set", epilog="""\b
Examples:
  ngff-writer set out.zarr/embryo --names nuclei,membranes --colors 00FFFF,FF00FF
  ngff-writer set out.zarr/embryo --window 0,1500 --window - --title "Embryo 1, denoised"
  ngff-writer set predictions/ --image sub/img_001.ome.zarr --title 'first stack'""")
@path_argument
@click.option("--image", "name", metavar="PATH",
              help="The image to edit (relative to PATH) when PATH holds several.")
@click.option("--names", help="Channel names, comma-separated, one per channel.")
@click.option("--colors", help="Channel colors as 6-digit hex, comma-separated, one per channel.")
@click.option("--window", "windows", multiple=True, metavar="START,END",
              help="Display window of a channel (repeat once per channel, in order; - keeps one).")
@click.option("--title", help="The image's name for viewers.")
@_errors
def set_metadata(path: str, options: dict[str, Any] | None, name: str | None, names: str | None,
                 colors: str | None, windows: tuple[str, ...], title: str | None) -> None:
    """Edit a final image's display metadata: channel names, colors, windows, title.

    Checked by ome-zarr-models before it is written; the arrays are never touched, and
    a later finalize or repair keeps the edit. An image still being written is refused
    (exit 1).
    """
    if names is None and colors is None and not windows and title is None:
        raise Failure("nothing to set: give --names, --colors, --window or --title", EXIT_USAGE)
    with opened(path, options, mode="a") as target:
        ours = [f for f in target.found if f.ngff_writer and (name is None or f.path == name.strip("/"))]
        if name is not None and not ours:
            raise Failure(f"no image {name!r} of ngff-writer's at {path}", EXIT_USAGE)
        if len(ours) != 1:
            shown = ", ".join(target.shown(f) for f in ours) or "none of ngff-writer's"
            raise Failure(f"{path} holds {len(ours)} images ({shown}): name one with --image", EXIT_USAGE)
        image = target.image(ours[0])
        try:
            if names is not None or colors is not None or windows:
                image.set_channels(names=None if names is None else names.split(","),
                                   colors=None if colors is None else colors.split(","),
                                   windows=_pairs(windows))
            if title is not None:
                image.set_title(title)
        except SpecError as exc:  # what was given does not fit the image: a usage error
            raise Failure(str(exc), EXIT_USAGE) from None
    click.echo(f"{target.shown(ours[0])}: metadata set")


@cli.command(epilog="""\b
Example:
  ngff-writer repair out.zarr       # then resume the export""")
@path_argument
@click.option("--force", is_flag=True, help="Repair even while a writer appears to be writing.")
@_errors
def repair(path: str, options: dict[str, Any] | None, force: bool) -> None:
    """Make damaged ngff-writer images resumable (run it while no writer is running).

    Rebuilds unreadable metadata (images, declarations, level arrays) from what is left,
    drops unreadable log segments and fragments, records stored data no record lists,
    finalizes images that are then complete, and deletes temporary files. It changes
    ngff-writer outputs only: anything else exits with 3 and nothing written.
    """
    check_local_path(path)
    done = repair_output(path, storage_options=options, force=force)
    if not done:
        click.echo(f"{path}: nothing to repair")
    for name, actions in done.items():
        click.echo(f"{name or '.'}:")
        for action in actions:
            click.echo(f"  - {action}")
    if done:
        click.echo("Resume the export (write what is pending again) to complete the images.")


@cli.command(epilog="""\b
Examples:
  ngff-writer view out.zarr                      # opens the browser; Ctrl-C stops
  ngff-writer view predictions/ --image sub/img_001.ome.zarr --no-browser""")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--image", "names", multiple=True, metavar="PATH",
              help="Show this image (relative to PATH; repeat for more). Default: all, the first visible.")
@click.option("--port", default=0, show_default=True, help="Port of the viewer on 127.0.0.1 (0: any free).")
@click.option("--no-browser", is_flag=True, help="Print the URL only.")
@_errors
def view(path: Path, names: tuple[str, ...], port: int, no_browser: bool) -> None:
    """Serve PATH on 127.0.0.1 and show it in neuroglancer (bundled, works offline).

    Needs the `view` extra: pip install 'ngff-writer[view]'. Images still being
    written show what is stored so far; reload the page to see more.
    """
    from ._view import serve

    with opened(str(path), None) as target:
        wanted = [f for f in target.found if not names or target.shown(f) in names]
        unknown = set(names) - {target.shown(f) for f in target.found}
        if unknown:
            raise Failure(f"no image {sorted(unknown)[0]!r} at {path}", EXIT_USAGE)
        infos = [describe_image(target.store, f.path) for f in wanted]
    try:
        viewing = serve(path.resolve(), infos, port=port)
    except ImportError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    # Ctrl-C stops, as the line below says, even where the shell that started us made us
    # ignore it (a command started with '&' in a script does: the view never ended then),
    # and a plain `kill` stops as cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    if hasattr(signal, "SIGUSR1"):
        # `kill -USR1` prints every thread's stack to stderr, from C, needing no lock: what
        # a view that does not stop is doing (Ctrl-C once left it running, never reproduced).
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        click.echo(f"neuroglancer: {viewing.url}", color=False)
        click.echo(f"showing {len(infos)} image(s) of {path}; Ctrl-C stops", err=True)
        if not no_browser:
            import webbrowser

            webbrowser.open(viewing.url)
        # Short sleeps: the kernel may hand a signal to any of the servers' threads; the
        # interpreter then only notes it, and the main thread raises KeyboardInterrupt
        # once it runs again. A long sleep never woke (the command outlived Ctrl-C).
        while True:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        # Whatever happens below, the command ends within 10 s; if stopping hangs, every
        # thread's stack goes to stderr first, and the exit code is 1.
        faulthandler.dump_traceback_later(10, exit=True)
        viewing.stop()
        # neuroglancer's server runs requests on a ThreadPoolExecutor, whose workers the
        # interpreter joins at exit: one still serving a connected page kept the process
        # alive long after Ctrl-C. The command holds nothing to save (it only reads), so it
        # leaves at once, output flushed, with exit code 0.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="ngff-writer",
                 standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0

