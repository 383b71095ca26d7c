"""A copy of the ragrec package that a test may edit (the real tree is never touched)."""

import shutil
from pathlib import Path

import pytest

from ragrec.reproduce.digest import PACKAGE_DIR


@pytest.fixture
def package_copy(tmp_path):
    """``tmp_path/ragrec``: the package's modules, copied."""
    return Path(
        shutil.copytree(PACKAGE_DIR, tmp_path / "ragrec", ignore=shutil.ignore_patterns("__pycache__"))
    )
