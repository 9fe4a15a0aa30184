"""Regenerate the contract's JSON schema files: `python -m kittyai.contract`."""

from kittyai.contract.schema import write_all

for written in write_all():
    print(written)  # noqa: T201
