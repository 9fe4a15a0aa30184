"""What KITTY's paid CAD clouds share: a bearer key checked once, JSON calls, a time limit.

A cloud provider is a subclass of `CloudProvider` that names its vendor and says how a
prompt becomes the part's file and the file becomes the part; asking the vendor whether
it takes the key, calling its API and keeping to `CloudOptions.timeout` are the same for
every vendor, and so are the messages they give the user.
"""

from abc import ABC, abstractmethod
import asyncio
from http import HTTPStatus
import logging
from typing import Any, ClassVar

import aiohttp
from pydantic import SecretStr

from kittyai.cad.options import CloudOptions
from kittyai.cad.providers.base import ProviderError, ProviderResult, VariantTask
from kittyai.contract.cad import ProviderName

_LOGGER = logging.getLogger(__name__)

# One HTTP call; the whole part gets `CloudOptions.timeout`.
REQUEST_TIMEOUT_S = 60.0
# The answers by which a vendor refuses the key, whatever was asked.
KEY_REJECTED_STATUSES = frozenset({HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN})


class CloudProvider(ABC):
    """Makes a variant with a paid cloud that answers a description, reached with a key."""

    # Which provider the subclass is, as requests and the service name it.
    name: ClassVar[ProviderName]
    # The vendor as the user reads it in every message.
    _vendor: ClassVar[str]
    # The request whose answer says whether the vendor takes the key.
    _probe_path: ClassVar[str]
    # How long the vendor's own clients wait between two looks at a running job.
    _default_poll_interval: ClassVar[float]

    def __init__(
        self,
        session: aiohttp.ClientSession,
        cloud: CloudOptions,
        *,
        poll_interval: float | None = None,
    ) -> None:
        """Call the vendor through `session`, looking at a running job every `poll_interval` s.

        Args:
            session: The client session every request goes through.
            cloud: The options naming the vendor's URL, its key and the part's time limit.
            poll_interval: Seconds between two looks at a running job; by default as
                long as the vendor's own clients wait.
        """
        self._session = session
        self._cloud = cloud
        base_url, self._secret = self._endpoint(cloud)
        self._base_url = base_url.rstrip("/")
        self._poll_interval = (
            self._default_poll_interval if poll_interval is None else poll_interval
        )
        self._key_checked = False
        self._key_problem: str | None = None
        self._check_lock = asyncio.Lock()
        self._no_key = f"no {self._vendor} API key is configured"
        self._key_rejected = f"{self._vendor} rejected the API key"
        self._unreachable = f"{self._vendor} cannot be reached"

    @abstractmethod
    def _endpoint(self, cloud: CloudOptions) -> tuple[str, SecretStr | None]:
        """Return the vendor's base URL and API key among the cloud options."""

    @abstractmethod
    async def _fetch(self, prompt: str) -> bytes:
        """Return the file the vendor made from `prompt`; raise ProviderError if none."""

    @abstractmethod
    def _build(self, made: bytes, task: VariantTask) -> ProviderResult:
        """Return the part in `made`, checked and written to `task.out_dir`.

        Runs in a worker thread: reading and checking a part blocks.
        """

    @property
    def _api_key(self) -> str | None:
        return self._secret.get_secret_value() if self._secret is not None else None

    def _key_format_problem(self, key: str) -> str | None:
        """Return why `key` cannot be the vendor's, before asking the vendor, or None."""
        return None

    def _local_key_problem(self) -> str | None:
        """Return what is wrong with the configured key that needs no call to see, or None."""
        if (key := self._api_key) is None:
            return self._no_key
        return self._key_format_problem(key)

    async def unavailable_reason(self) -> str | None:
        """Return why the vendor cannot be used: no key, a bad or refused key, no connection.

        The vendor's verdict on the key is asked once and kept; a failed connection or a
        server error is not kept, so the next request asks again.
        """
        if (problem := self._local_key_problem()) is not None:
            return problem
        async with self._check_lock:
            if self._key_checked:
                return self._key_problem
            try:
                status, _ = await self._call("GET", self._probe_path)
            except ProviderError:
                return self._unreachable
            problem = self._probe_problem(status)
            # A verdict on the key holds; a server error may be gone next time.
            if status == HTTPStatus.OK or status in KEY_REJECTED_STATUSES:
                self._key_checked, self._key_problem = True, problem
            if problem is not None:
                _LOGGER.warning("%s is unavailable: %s", self._vendor, problem)
            return problem

    async def generate(self, task: VariantTask) -> ProviderResult:
        """Ask the vendor for the part within the time limit, then check it and export it."""
        prompt = task.request.prompt
        if prompt is None:
            raise ProviderError(
                f"{self._vendor} makes parts from a description: the request has no prompt"
            )
        if (problem := self._local_key_problem()) is not None:
            raise ProviderError(problem)
        try:
            async with asyncio.timeout(self._cloud.timeout):
                made = await self._fetch(prompt)
        except TimeoutError:
            raise ProviderError(
                f"{self._vendor} did not finish the part within {self._cloud.timeout:g} s"
            ) from None
        return await asyncio.to_thread(self._build, made, task)

    def _probe_problem(self, status: int) -> str | None:
        """Return what the vendor's answer to the key check says is wrong, or None."""
        if status in KEY_REJECTED_STATUSES:
            return self._key_rejected
        if status != HTTPStatus.OK:
            return f"{self._vendor} answered HTTP {status} to the key check"
        return None

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Return the vendor's status and JSON answer (None if not JSON) to one request."""
        try:
            async with self._session.request(
                method,
                self._base_url + path,
                json=body,
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as response:
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                return response.status, answer
        except TimeoutError:
            raise ProviderError(
                f"{self._vendor} did not answer within {REQUEST_TIMEOUT_S:g} s"
            ) from None
        except aiohttp.ClientError as err:
            raise ProviderError(f"{self._unreachable}: {type(err).__name__}") from None

    def _unexpected(self, status: int, answer: Any) -> ProviderError:
        """Return the error for an answer that is not the one asked for."""
        if status in KEY_REJECTED_STATUSES:
            return ProviderError(self._key_rejected)
        message = answer.get("message") if isinstance(answer, dict) else None
        return self._error(f"{self._vendor} answered HTTP {status}: {message or 'no message'}")

    def _error(self, message: str) -> ProviderError:
        """Return a ProviderError whose text hides the key, should the vendor ever echo it."""
        if (key := self._api_key) and key in message:
            message = message.replace(key, "***")
        return ProviderError(message)
