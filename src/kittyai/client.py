"""Async client for the HTTP API every KITTY service serves.

The Home Assistant integration uses it with HA's shared aiohttp session, so it
never creates a session of its own.
"""

from http import HTTPStatus

import aiohttp
from pydantic import ValidationError
from yarl import URL

from kittyai.contract import ServiceInfo

DEFAULT_TIMEOUT = 10.0


class KittyError(Exception):
    """Base error of the KITTY client."""


class KittyConnectionError(KittyError):
    """The service could not be reached or timed out."""


class KittyAuthError(KittyError):
    """The service rejected the token."""


class KittyResponseError(KittyError):
    """The service answered, but not as a KITTY service would."""


class KittyClient:
    """Talks to one KITTY service over HTTP with a bearer token."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str | URL,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Use `session` to reach the service at `url`."""
        self._session = session
        self._url = URL(str(url))
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    @property
    def url(self) -> URL:
        """Return the service's base URL."""
        return self._url

    async def get_info(self) -> ServiceInfo:
        """Return who the service is; this also proves the token works."""
        body = await self._get_json("/api/info")
        try:
            return ServiceInfo.model_validate(body)
        except ValidationError as err:
            raise KittyResponseError(f"{self._url} is not a KITTY service") from err

    async def _get_json(self, path: str) -> object:
        try:
            async with self._session.get(
                self._url.join(URL(path)), headers=self._headers, timeout=self._timeout
            ) as response:
                if response.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                    raise KittyAuthError(f"{self._url} rejected the token")
                if response.status != HTTPStatus.OK:
                    raise KittyResponseError(f"{self._url}{path} answered HTTP {response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientConnectionError, TimeoutError) as err:
            raise KittyConnectionError(f"Cannot reach {self._url}") from err
        except (aiohttp.ContentTypeError, ValueError) as err:
            raise KittyResponseError(f"{self._url}{path} did not answer JSON") from err
