"""Hostile documents: every command answers with a typed error, never a traceback.

An image's group document is replaced by one a bad disk or an attacker could leave: too
large to read, or nested too deep for any parser. Each command, run as a user runs it,
exits with a documented code (docs/guide/cli.md) and names the document.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ngff_writer as nw

SCRIPT = str(Path(sys.executable).with_name("ngff-writer"))
#: Small for the tests: a document over it is refused as one over the default 16 MiB is.
CAP = 64 * 1024


def too_large(doc: dict) -> bytes:
    doc = dict(doc)
    doc["attributes"] = {**doc["attributes"], "padding": "x" * (2 * CAP)}
    return json.dumps(doc).encode()


def too_deep(doc: dict) -> bytes:
    return b'{"zarr_format": 3, "node_type": "group", "attributes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.fixture
def output(tmp_path) -> Path:
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        img = out.create_image("p", (2, 16, 16), "syx")
        img.write_sample(0, np.ones((16, 16), np.float32))
    return root


@pytest.mark.parametrize("damage", [too_large, too_deep])
@pytest.mark.parametrize("where", ["p/zarr.json", "p/ngff_writer/zarr.json"])
@pytest.mark.parametrize("command", ["status", "info", "validate", "repair", "finalize"])
def test_every_command_refuses_a_hostile_document_with_its_exit_code(output, damage, where, command):
    doc = output / where
    doc.write_bytes(damage(json.loads(doc.read_bytes())))
    env = {**os.environ, "NGFF_WRITER_MAX_DOCUMENT_BYTES": str(CAP)}
    done = subprocess.run([SCRIPT, command, str(output)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    said = done.stdout + done.stderr
    if command == "repair":
        # Its job: the document is rebuilt from the other one (declaration or attributes).
        assert done.returncode == 0, said[-500:]
        json.loads(doc.read_bytes())
        assert len(doc.read_bytes()) < CAP
    elif where.endswith("ngff_writer/zarr.json") and command != "finalize":
        # The declaration is the writers' (they raise CorruptError, below), finalize's and
        # repair's: status, info and validate read the image's attributes and its log, and
        # report the image as it is: in progress (validate: 1, incomplete).
        assert done.returncode == (1 if command == "validate" else 0), said[-500:]
        assert "in progress" in said or "incomplete" in said, said[-500:]
    else:
        # Unreadable (1: info and validate report it; 4: the store cannot be read as it is),
        # and the damaged document is named.
        assert done.returncode in (1, 4), (done.returncode, said[-500:])
        assert "zarr.json" in said or "repair" in said, said[-500:]


def test_the_library_raises_corrupt_error_for_both(output, monkeypatch):
    import ngff_writer._storage.stores as stores

    monkeypatch.setattr(stores, "MAX_DOCUMENT_BYTES", CAP)
    doc = output / "p" / "ngff_writer" / "zarr.json"
    original = doc.read_bytes()
    for damage in (too_large, too_deep):
        doc.write_bytes(damage(json.loads(original)))
        with pytest.raises(nw.CorruptError, match=r"zarr\.json"):
            with nw.open_output(output, mode="a") as out:
                out["p"].write_sample(1, np.ones((16, 16), np.float32))


def _spec_field(field: str, value):
    def damage(doc: dict) -> bytes:
        doc = json.loads(json.dumps(doc))
        block = doc["attributes"].get("ngff_writer", doc["attributes"])
        block["spec"][field] = value
        return json.dumps(doc).encode()
    damage.__name__ = f"{field}={value!r}"
    return damage


FIELDS = [_spec_field("shape", [10**18, 16, 16]), _spec_field("shape", [-2, 16, 16]),
          _spec_field("chunks", [1, 0, 16]), _spec_field("dtype", "not-a-dtype"),
          _spec_field("axes", 7), _spec_field("pyramid", {"levels": "many"})]


@pytest.mark.parametrize("damage", FIELDS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("where", ["p/zarr.json", "p/ngff_writer/zarr.json"])
def test_a_stored_spec_with_a_hostile_field_is_corrupt_everywhere(output, damage, where):
    doc = output / where
    doc.write_bytes(damage(json.loads(doc.read_bytes())))
    for command in ("status", "info", "validate", "finalize"):
        done = subprocess.run([SCRIPT, command, str(output)], capture_output=True, text=True, timeout=120)
        assert "Traceback" not in done.stderr, (command, done.stderr[-2000:])
        assert done.returncode in (0, 1, 4), (command, done.returncode, done.stderr[-500:])
    if where == "p/zarr.json":
        with pytest.raises(nw.NgffWriterError):  # a writer never uses it
            with nw.open_output(output, mode="a") as out:
                out["p"].write_sample(1, np.ones((16, 16), np.float32))
    # (A damaged declaration's spec is not what writers use: the image's attributes hold it.)
    # repair rebuilds the damaged document from the other one, and the export resumes.
    done = subprocess.run([SCRIPT, "repair", str(output)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-500:]
    with nw.open_output(output, mode="a") as out:
        out["p"].write_sample(1, np.ones((16, 16), np.float32))
        assert out["p"].is_final


def _ome_field(where: str, field: str, value):
    """Set ``field`` (a path of keys under the OME block) of the document at ``where``."""
    def damage(doc: dict) -> bytes:
        doc = json.loads(json.dumps(doc))
        block = doc["attributes"].get("ome", doc["attributes"])
        *parents, last = field.split(".")
        for key in parents:
            block = block[key]
        block[last] = value
        return json.dumps(doc).encode()
    damage.__name__ = f"{field}={value!r}"
    damage.where = where  # type: ignore[attr-defined]
    return damage


OME_FIELDS = [
    _ome_field("p/zarr.json", "omero", "x"),
    _ome_field("p/zarr.json", "omero.channels", "x"),
    _ome_field("p/zarr.json", "omero.channels", ["x"]),
    _ome_field("p/zarr.json", "omero.channels", [{"label": "a", "window": "y"}]),
    _ome_field("p/zarr.json", "omero.channels", [{"label": "a", "window": {"start": "low"}}]),
    _ome_field("p/zarr.json", "multiscales", "x"),
    _ome_field("p/zarr.json", "multiscales", [{"axes": 5, "datasets": []}]),
    _ome_field("p/zarr.json", "multiscales", [{"axes": [], "datasets": "x"}]),
    _ome_field("plate/zarr.json", "plate.rows", "ABC"),
    _ome_field("plate/zarr.json", "plate.columns", [{"name": 1}]),
    _ome_field("plate/zarr.json", "plate.wells", [{"path": 5, "rowIndex": "a", "columnIndex": 0}]),
    _ome_field("plate/zarr.json", "plate.wells", [{"path": "A/1", "rowIndex": 9, "columnIndex": 0}]),
    _ome_field("plate/zarr.json", "plate.field_count", "many"),
]


@pytest.fixture
def with_plate(output) -> Path:
    with nw.open_output(output, mode="a") as out:
        out["p"].write_sample(1, np.ones((16, 16), np.float32))  # complete: finalize has nothing to say
        plate = out.create_plate("plate", 1, 2, (16, 16), "yx")
        for row, column in plate.wells:
            plate.field(row, column).write_block(np.ones((16, 16), np.float32), (0, 0))
    return output


@pytest.mark.parametrize("damage", OME_FIELDS, ids=lambda d: d.__name__)
def test_every_command_refuses_a_hostile_ome_field_naming_it(with_plate, damage):
    doc = with_plate / damage.where
    doc.write_bytes(damage(json.loads(doc.read_bytes())))
    field = damage.__name__.split("=")[0].split(".")[0]
    for command in ("status", "info", "validate", "repair", "finalize"):
        done = subprocess.run([SCRIPT, command, str(with_plate)], capture_output=True, text=True,
                              timeout=120)
        said = done.stdout + done.stderr
        assert "Traceback" not in done.stderr, (command, done.stderr[-2000:])
        # The documented codes (cli.md): 1 an image is unreadable, 4 the store cannot be read
        # as it is; a command that does not read the field (repair, finalize: our own
        # documents) succeeds.
        assert done.returncode in (0, 1, 4), (command, done.returncode, said[-500:])
        if done.returncode:
            assert field in said and damage.where in said, (command, said[-500:])
    reader = "status" if damage.where.startswith("plate") else "info"
    done = subprocess.run([SCRIPT, reader, str(with_plate)], capture_output=True, text=True, timeout=120)
    assert done.returncode in (1, 4), (reader, done.stdout[-500:])
    # The library says the same: a CorruptError naming the document.
    with nw.open_output(with_plate, mode="r") as out, pytest.raises(nw.CorruptError, match=field):
        if reader == "status":
            out.status()
            out.plate("plate")
        else:
            from ngff_writer.reading import describe_image
            describe_image(out.store, "p")


#: Runs the CLI, then prints the process's peak resident memory (VmHWM: this process's
#: own, where ru_maxrss of a child counts what it inherited from its parent too).
PEAK = ("import runpy, sys\n"
        "try:\n"
        "    sys.argv = ['ngff-writer', *sys.argv[1:]]\n"
        "    runpy.run_module('ngff_writer.cli', run_name='__main__')\n"
        "finally:\n"
        "    hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
        "    print('PEAK', int(hwm.split()[1]) // 1024, file=sys.stderr)\n")


@pytest.mark.parametrize("where", ["zarr.json", "p/zarr.json", "p/ngff_writer/zarr.json", "p/0/zarr.json",
                                   "p/ngff_writer/log/x.json", "p/ngff_writer/writers/x.json"])
def test_a_200_mb_document_is_refused_without_reading_it(output, where):
    doc = output / where
    doc.parent.mkdir(parents=True, exist_ok=True)
    with open(doc, "wb") as f:  # 200 MB, sparse: what matters is that no command reads it
        f.write(b'{"zarr_format": 3, "node_type": "group", "attributes": {"pad": "')
        f.truncate(200 * 10**6)
    for command in ("status", "info", "validate", "repair", "finalize"):
        done = subprocess.run([sys.executable, "-c", PEAK, command, str(output)], capture_output=True,
                              text=True, timeout=120)
        assert "Traceback" not in done.stderr, (command, done.stderr[-2000:])
        assert done.returncode in (0, 1, 4), (command, done.returncode, done.stderr[-500:])
        peak = int(done.stderr.rsplit("PEAK", 1)[1])
        assert peak < 200, (command, peak)  # the document alone would be 200 MB
