"""Run the KITTY rag service: `python -m kittyai.rag [--options F] [--data D]`."""

from kittyai.rag import SERVICE
from kittyai.service import main

main(SERVICE)
