"""Stopping the peer processes the tests start."""

import subprocess


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Ask `process` to exit, and kill it if it has not within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
