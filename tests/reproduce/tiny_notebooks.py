"""A tiny parameterized notebook for the runner's tests (two of them make a fake project)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook


def write_notebook(path: Path, body: str) -> None:
    """A notebook at ``path`` with papermill's ``parameters`` cell, ``out = Path(out_dir)``, then ``body``."""
    params = new_code_cell('dataset = "x"\nprofile = "x"\nseed = 0\nout_dir = "."')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(
        cells=[params, new_code_cell("from pathlib import Path\nout = Path(out_dir)"), new_code_cell(body)]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
