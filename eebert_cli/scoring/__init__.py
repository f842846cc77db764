"""Scoring an artifact on a split: outputs, the threshold search, the operating point, baselines, curves, benchmark, reports."""
