"""``python -m bench``: run the benchmark harness (see bench/run.py)."""

from bench.run import main

main()
