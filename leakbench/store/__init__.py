"""Everything leakbench writes to disk: atomic files, JSONL logs, run directories."""
