"""The real local model: llama-cpp-python's OpenAI-compatible server running Gemma 3 270M.

`scripts/bootstrap` installs the server into `.venv-llm` (kept apart from `.venv`, whose
pins it would fight) and assembles the GGUF into `.venv-llm/models/`; nothing downloads
at run time.
"""

import json
import os
from pathlib import Path
import subprocess
import time
import urllib.error
import urllib.request

from tests.helpers.net import free_port
from tests.helpers.processes import terminate

ROOT = Path(__file__).resolve().parents[2]
LLM_VENV = Path(os.environ.get("KITTY_LLM_VENV", ROOT / ".venv-llm"))
GGUF = LLM_VENV / "models" / "gemma-3-270m-q4_k_m.gguf"
# The packaged GGUF is the pretrained model, without a chat template: this one writes
# the chat as a plain transcript, which it continues well (see the file).
TOKENIZER_CONFIG = ROOT / "scripts" / "llm" / "gemma3-tokenizer-config.json"
MODEL = "gemma-3-270m"


class LlamaServer:
    """One llama-cpp-python server process on a free 127.0.0.1 port."""

    def __init__(self, workdir: Path) -> None:
        """Prepare the server; its log goes to `workdir/llama-server.log`."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.model = MODEL
        self.log_path = workdir / "llama-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until it lists the model."""
        if not GGUF.exists():
            raise FileNotFoundError(f"{GGUF} is missing: run scripts/bootstrap")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(LLM_VENV / "bin" / "python"),
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(GGUF),
                    "--model_alias",
                    MODEL,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--n_ctx",
                    "4096",
                    # Every core, for generation too (the server's default uses half).
                    "--n_threads",
                    str(os.cpu_count() or 1),
                    "--chat_format",
                    "hf-tokenizer-config",
                    "--hf_tokenizer_config_path",
                    str(TOKENIZER_CONFIG),
                    # Queue concurrent requests instead of cutting the running one short.
                    "--interrupt_requests",
                    "false",
                    "--verbose",
                    "false",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self._lists_model():
            if self._process.poll() is not None:
                raise RuntimeError(f"llama server exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"llama server did not come up:\n{self.log()}")
            time.sleep(0.2)

    def _lists_model(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                models = json.load(response)
        except urllib.error.URLError, OSError:
            return False
        return any(model["id"] == MODEL for model in models["data"])

    def stop(self) -> None:
        """Stop the server, killing it if it does not exit in time."""
        if self._process is None:
            return
        terminate(self._process, timeout=15)
        self._process = None

    def log(self) -> str:
        """Return what the server wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")
