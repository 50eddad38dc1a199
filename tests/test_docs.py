"""The documentation: every Python block of the guide and README runs, the site builds strictly.

Blocks of one page run in order, in one namespace, in a fresh directory: a page may build on
what its earlier blocks defined, as a reader following it would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
#: Pages whose blocks need the careamics extra (they train a tiny model).
NEEDS_CAREAMICS = {"careamics.md", "README.md"}


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, tmp_path, monkeypatch):
    if page.name in NEEDS_CAREAMICS:
        pytest.importorskip("careamics", reason="needs the careamics extra")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for k, code in enumerate(blocks(page)):
        try:
            exec(compile(code, f"{page.relative_to(ROOT)} block {k + 1}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.relative_to(ROOT)}, Python block {k + 1} fails:\n{code}") from exc


def test_every_example_runs_in_the_tests():
    tested = (ROOT / "tests" / "test_examples.py").read_text()
    for example in sorted((ROOT / "examples").glob("*.py")):
        assert example.name in tested, f"examples/{example.name} is not run by tests/test_examples.py"


def test_the_site_builds_without_a_warning(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("needs the docs extra (mkdocs-material, mkdocstrings-python)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    cli_page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert cli_page.count("Usage: ngff-writer") >= 8  # the group and every command
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    import ngff_writer

    for name in ngff_writer.__all__:
        if name != "__version__":
            assert f'id="ngff_writer.{name}"' in api or f'id="ngff_writer.errors.{name}"' in api, name


@pytest.mark.parametrize("page", [ROOT / "README.md", ROOT / "docs" / "guide" / "quickstart.md"],
                         ids=["README", "quickstart"])
def test_the_quickstart_run_twice_works_and_changes_nothing(page, tmp_path):
    """Each run a process of its own, as a user runs the script again."""
    script = tmp_path / "quickstart.py"
    script.write_text("\n".join(blocks(page)[:2]))  # an array in hand, then predictions as they arrive

    def run() -> dict[str, bytes]:
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        assert "Warning" not in done.stderr, done.stderr
        files = {}
        for out in (tmp_path / "volume.ome.zarr", tmp_path / "predictions.zarr"):
            assert out.is_dir()
            files.update({str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(out.rglob("*"))
                          if p.is_file()})
        return files

    first = run()
    assert run() == first


def test_the_cluster_block_runs_as_a_script(tmp_path):
    """Worker processes import the script again: the page's blocks, saved as a script, run."""
    pytest.importorskip("distributed")
    script = tmp_path / "cluster.py"
    script.write_text("\n".join(blocks(ROOT / "docs" / "guide" / "scaling.md")[:2]))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.splitlines()[-1] == "True"
    assert (tmp_path / "cluster.zarr" / "embryo" / "zarr.json").is_file()
