"""Run the KITTY router service: `python -m kittyai.router [--options F] [--data D]`."""

from kittyai.router import SERVICE
from kittyai.service import main

main(SERVICE)
