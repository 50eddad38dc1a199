"""The seam to zarr's, s3fs's and fsspec's private names stays in ``ngff_writer/_storage/compat.py``.

The scan below fails when a module other than ``_compat`` uses a private name of theirs
(see the module docstring of :mod:`ngff_writer._storage.compat` for what counts, and what does
not). The rest checks that each name ``_compat`` relies on still means what it did.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import io
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, MemoryStore, WrapperStore

from ngff_writer._storage import compat as _compat

PACKAGE = Path(_compat.__file__).parent.parent

#: Modules not scanned yet: they are being changed elsewhere and will switch to ``_compat``
#: (then leave this list) in that change.
NOT_YET_SCANNED: frozenset[str] = frozenset()

#: What a private name looks like, each with a line it must catch.
PRIVATE = {
    # zarr's internal package: imports from it, and dotted class paths into it.
    r"\bzarr\.core\b": "from zarr.core.sync import sync",
    # A private module or name anywhere in a dotted zarr, fsspec, s3fs or obstore path.
    r"\b(zarr|fsspec|s3fs|obstore)(\.\w+)*\._\w": "from zarr.storage._utils import x",
    # A WrapperStore's wrapped store (an own method that happens to be called _store is not).
    r"\._store\b(?!\s*\()": "inner = store._store",
    # LocalStore's lazy open.
    r"\._ensure_open_sync\b": "store._ensure_open_sync()",
    # fsspec's coroutines (s3fs's _pipe_file, ...) on a store's filesystem.
    r"\.fs\._\w": "await base.fs._pipe_file(path, data)",
    # Private fields of zarr's arrays and stores.
    r"\.(_chunk_grid|_async_array|_store_dict|_is_open)\b": "grid = inner._chunk_grid",
    # Setting a field of one of zarr's frozen objects (an array's codec pipeline, say).
    r"\bobject\.__setattr__\(": 'object.__setattr__(inner, "codec_pipeline", fused)',
}


def _code_lines(source: str) -> dict[int, str]:
    """The code of each line: without comments and docstrings (prose may name what it likes).

    Other strings stay: a dotted class path into ``zarr.core`` in a string is a use.
    """
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            for number in range(node.lineno, (node.end_lineno or node.lineno) + 1):
                lines[number - 1] = ""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    return {number: line for number, line in enumerate(lines, 1) if line.strip()}


@pytest.mark.parametrize("pattern", sorted(PRIVATE))
def test_each_pattern_catches_its_example(pattern):
    assert re.search(pattern, PRIVATE[pattern])


def test_comments_and_docstrings_are_not_scanned():
    source = '''"""Uses ``zarr.core`` for speed."""

from zarr.core.sync import sync

def f(store):
    """Reads ``store._store``."""
    x = 1  # not store._store
    inner = store._store
    return "zarr.core.codec_pipeline.FusedCodecPipeline"
'''
    scanned = {n: c for n, c in _code_lines(source).items() if any(re.search(p, c) for p in PRIVATE)}
    assert list(scanned) == [3, 8, 9]


def test_own_methods_named_store_are_not_private_names():
    assert not re.search(r"\._store\b(?!\s*\()", "self._store(target, data)")


def test_private_names_are_used_only_in_compat():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name == "_storage/compat.py" or name in NOT_YET_SCANNED:
            continue
        source = path.read_text()
        for number, code in sorted(_code_lines(source).items()):
            if any(re.search(pattern, code) for pattern in PRIVATE):
                found.append(f"{name}:{number}: {source.splitlines()[number - 1].strip()}")
    assert not found, ("private names of zarr/s3fs/fsspec outside ngff_writer/_storage/compat.py:\n"
                       + "\n".join(found))


def test_the_exemptions_name_existing_modules():
    assert all((PACKAGE / name).is_file() for name in NOT_YET_SCANNED)


# ---- what each name in _compat still does ---------------------------------------------------------
def test_zarr_sync_runs_on_zarrs_own_loop():
    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    assert _compat.zarr_sync(loop_id()) == _compat.zarr_sync(loop_id())


def test_wrapped_is_the_store_under_a_wrapper():
    inner = MemoryStore()
    assert _compat.wrapped(WrapperStore(inner)) is inner


def test_ensure_open_sync_opens_a_local_store(tmp_path):
    store = LocalStore(tmp_path / "new")
    assert not store._is_open
    _compat.ensure_open_sync(store)
    assert store._is_open and (tmp_path / "new").is_dir()


def test_the_default_pipeline_path_is_zarrs_default():
    assert zarr.config.get("codec_pipeline.path") == _compat.DEFAULT_PIPELINE


@pytest.mark.parametrize("path", _compat.ZARR_PIPELINES)
def test_zarrs_pipelines_are_recognised(path):
    with zarr.config.set({"codec_pipeline.path": path}):
        array = zarr.create_array(MemoryStore(), shape=(4,), dtype="f4", chunks=(2,))
    pipeline = array.async_array.codec_pipeline
    assert f"{type(pipeline).__module__}.{type(pipeline).__qualname__}" == path
    assert _compat.is_zarr_pipeline(pipeline)


def test_use_fused_pipeline_swaps_only_zarrs_default():
    store = MemoryStore()
    array = zarr.create_array(store, name="a", shape=(5, 6), dtype="u2", chunks=(2, 4))
    assert _compat.use_fused_pipeline(array.async_array)
    assert f"{type(array.async_array.codec_pipeline).__module__}." \
        f"{type(array.async_array.codec_pipeline).__qualname__}" == _compat.FUSED_PIPELINE
    data = np.arange(30, dtype="u2").reshape(5, 6)
    array[:] = data
    np.testing.assert_array_equal(zarr.open_array(store, path="a", mode="r")[:], data)
    assert not _compat.use_fused_pipeline(array.async_array)  # already fused
    empty = zarr.create_array(store, name="e", shape=(0, 3), dtype="f4", chunks=(1, 3))
    assert not _compat.use_fused_pipeline(empty.async_array)


def test_another_pipeline_is_not_zarrs():
    assert not _compat.is_zarr_pipeline(object())


def test_s3fs_has_the_conditional_put():
    s3fs = pytest.importorskip("s3fs")
    assert "mode" in inspect.signature(s3fs.S3FileSystem._pipe_file).parameters
