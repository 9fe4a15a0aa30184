"""Run the KITTY orchestrator service: `python -m kittyai.orchestrator [--options F] [--data D]`."""

from kittyai.orchestrator import SERVICE
from kittyai.service import main

main(SERVICE)
