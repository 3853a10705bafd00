"""Data: read rows in the formats people have, turn them into examples, split them."""

from tunesmith.data.examples import Example
from tunesmith.data.formats import FORMATS, detect_format, register_format
from tunesmith.data.prepare import Splits, prepare_splits

__all__ = ["Example", "FORMATS", "Splits", "detect_format", "prepare_splits", "register_format"]
