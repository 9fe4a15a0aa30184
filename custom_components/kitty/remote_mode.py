"""Remote mode: while on, KITTY only reads; it changes nothing in the house or the shop."""

from dataclasses import dataclass


@dataclass(slots=True)
class RemoteMode:
    """The remote mode flag of one KITTY entry; the switch sets it, the agents obey it."""

    is_on: bool = False
