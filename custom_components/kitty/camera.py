"""Cameras of the KITTY integration: the webcam a print server offers, as an MJPEG camera.

The print servers name a still image URL, an MJPEG stream URL, or both. Stills come
from the snapshot URL, else from the stream's next frame; the stream is proxied as
it is, as Home Assistant's own MJPEG camera does.
"""

import asyncio
from typing import override

from aiohttp import ClientError, ClientSession, web
from homeassistant.components.camera import Camera, CameraEntityDescription
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.aiohttp_client import (
    async_aiohttp_proxy_web,
    async_get_clientsession,
)
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from kittyai.printers.base import PrinterInfo

from . import KittyConfigEntry
from .const import DOMAIN
from .entity import KittyPrinterEntity
from .printer_coordinator import PrinterCoordinator

# Each image is its own request to the webcam.
PARALLEL_UPDATES = 0

WEBCAM = CameraEntityDescription(key="webcam", translation_key="webcam")
# How long one still may take, from the snapshot URL or from the stream.
IMAGE_TIMEOUT_S = 10
# JPEG's start and end of image markers: a frame of an MJPEG stream lies between them.
JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: KittyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a camera for every printer whose print server names a webcam."""
    for subentry_id, printer in entry.runtime_data.printers.items():
        _async_add_camera_once_known(entry, printer, subentry_id, async_add_entities)


@callback
def _async_add_camera_once_known(
    entry: KittyConfigEntry,
    printer: PrinterCoordinator,
    subentry_id: str,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the printer's camera as soon as it is known whether it has one.

    That takes the print server's first answer, which a printer switched off when
    Home Assistant started gives only later.
    """
    known = False

    @callback
    def add_if_known() -> None:
        nonlocal known
        if known or (info := printer.info) is None:
            return
        known = True
        if info.stream_url or info.snapshot_url:
            async_add_entities([KittyPrinterCamera(printer, info)], config_subentry_id=subentry_id)

    add_if_known()
    if not known:
        entry.async_on_unload(printer.async_add_listener(add_if_known))


class KittyPrinterCamera(KittyPrinterEntity, Camera):
    """The webcam of a printer, available while its print server answers."""

    def __init__(self, coordinator: PrinterCoordinator, info: PrinterInfo) -> None:
        """Show the webcam `info` names."""
        super().__init__(coordinator, WEBCAM)
        Camera.__init__(self)
        self._stream_url = info.stream_url
        self._snapshot_url = info.snapshot_url

    @property
    def _session(self) -> ClientSession:
        return async_get_clientsession(self.hass)

    @override
    async def async_camera_image(
        self, width: int | None = None, height: int | None = None
    ) -> bytes | None:
        """Return a still: the snapshot, else the stream's next frame."""
        try:
            async with asyncio.timeout(IMAGE_TIMEOUT_S):
                if self._snapshot_url:
                    async with self._session.get(self._snapshot_url) as response:
                        response.raise_for_status()
                        return await response.read()
                if self._stream_url:
                    return await self._async_frame_of_stream(self._stream_url)
        except (TimeoutError, ClientError) as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="camera_unavailable",
                translation_placeholders={"printer": self.coordinator.name, "error": str(err)},
            ) from err
        return None

    async def _async_frame_of_stream(self, url: str) -> bytes | None:
        """Return the first whole JPEG of an MJPEG stream; None if it ends before one."""
        data = b""
        async with self._session.get(url) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_any():
                data += chunk
                start = data.find(JPEG_START)
                if start != -1 and (end := data.find(JPEG_END, start)) != -1:
                    return data[start : end + len(JPEG_END)]
        return None

    @override
    async def handle_async_mjpeg_stream(self, request: web.Request) -> web.StreamResponse | None:
        """Proxy the webcam's MJPEG stream; without one, a stream of stills."""
        if not self._stream_url:
            return await super().handle_async_mjpeg_stream(request)
        return await async_aiohttp_proxy_web(
            self.hass, request, self._session.get(self._stream_url), buffer_size=102400
        )
