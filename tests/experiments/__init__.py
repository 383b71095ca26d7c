"""Tests of ragrec.experiments."""

HEADS = (2, 4, 6)  # exit-head layers on the tiny 6-layer backbone of these tests
