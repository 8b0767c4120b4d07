"""Datasets and prompts; importers for JSONL, CSV and Parquet in verl's format."""
