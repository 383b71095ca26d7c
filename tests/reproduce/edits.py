"""Edits to a copy of the package: some change only text, some change code."""

from __future__ import annotations

from pathlib import Path


def edit_module(package: Path, module: str, old: str, new: str) -> None:
    path = package / module
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not a unique line of {module}"
    path.write_text(text.replace(old, new))


MODULE = "data/raw.py"
TEXT_EDITS = {
    "comment": ("MAX_ID = 2**53  #", "MAX_ID = 2**53  # fixed a typo in this comment;"),
    "module-docstring": ('"""Reading raw files:', '"""Reading the raw files:'),
    "function-docstring": ("the argument, else", "the given argument, else"),
    "attribute-docstring": (
        '"""The delimiters a wrong-format file',
        '"""The delimiters that a wrong-format file',
    ),
    "reformatting": (
        'DELIMITERS = (";", ",", "\\t", "|")',
        'DELIMITERS = (\n    ";",\n    ",",\n    "\\t",\n    "|",\n)',
    ),
}
CODE_EDITS = {
    "constant": ("MAX_ID = 2**53", "MAX_ID = 2**52"),
    "expression": ("(number.abs() < MAX_ID)", "(number.abs() <= MAX_ID)"),
    "default-argument": (
        'what: str, encoding: str = "utf-8") -> None',
        'what: str, encoding: str = "latin-1") -> None',
    ),
}
