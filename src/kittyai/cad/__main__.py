"""Run the KITTY cad service: `python -m kittyai.cad [--options F] [--data D]`."""

from kittyai.cad import SERVICE
from kittyai.service import main

main(SERVICE)
