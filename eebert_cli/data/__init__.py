"""Data specs: a built-in real corpus by name, or local CSV/TSV/JSONL/parquet files."""

from .sources import check_spec, load_data
from .spec import DataConfig, Split, TaskData, map_labels

__all__ = ["DataConfig", "Split", "TaskData", "check_spec", "load_data", "map_labels"]
