"""Run a KITTY worker: `python -m kittyai.worker [--options F] [--data D]`."""

from kittyai.worker.runner import main

main()
