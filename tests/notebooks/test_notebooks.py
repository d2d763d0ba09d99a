"""Notebook tier: every notebook in notebooks/ runs top to bottom without an error.

CI sets SINKLENS_NOTEBOOK_SMALL=1, which the notebooks read to pick a smaller
configuration; they run the same cells either way.
"""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def notebook_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sinklens-cache")


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


# One worker runs them all, in order: later notebooks reuse the zoo members that earlier
# ones trained, and two workers must never train the same member into the same folder.
@pytest.mark.slow
@pytest.mark.xdist_group(name="notebooks")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch, notebook_cache):
    monkeypatch.setenv("SINKLENS_NOTEBOOK_SMALL", os.environ.get("SINKLENS_NOTEBOOK_SMALL", "1"))
    # The kernels inherit this: the notebooks share one fresh zoo, never the user's cache.
    monkeypatch.setenv("SINKLENS_CACHE", str(notebook_cache))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        out
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
