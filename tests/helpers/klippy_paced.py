"""Run Klippy in file-output mode at wall-clock pace, for KITTY's Moonraker tests.

Run by the Python of `.venv-moonraker` (Kalico's Klippy) with Klippy's own arguments.
Without an MCU, Klippy runs a whole print in milliseconds and never lets a pause
wait for the moves it queued. Two overrides make it behave like a printer: the
file-output MCU is paced to real time, and the toolhead may wait for it.
"""

import fcntl
from pathlib import Path
import sys

from klippy import chelper, mcu, printer, toolhead

_connect_file = mcu.MCU._connect_file
_toolhead_init = toolhead.ToolHead.__init__


def _connect_file_paced(self: mcu.MCU, pace: bool = False) -> None:
    _connect_file(self, pace=True)


def _toolhead_init_pausing(self: toolhead.ToolHead, config: object) -> None:
    _toolhead_init(self, config)
    self.can_pause = True


def _build_c_helper() -> None:
    """Compile Klippy's C helper once, even when several Klippy processes start at once."""
    lock_path = Path(chelper.__file__).with_name("c_helper.lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        chelper.get_ffi()


if __name__ == "__main__":
    mcu.MCU._connect_file = _connect_file_paced
    toolhead.ToolHead.__init__ = _toolhead_init_pausing
    _build_c_helper()
    sys.exit(printer.main())
