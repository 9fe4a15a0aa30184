"""Buttons of the KITTY integration: pause, resume and cancel a printer's job."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import override

from homeassistant.components.button import ButtonEntity, ButtonEntityDescription
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from kittyai.printers.base import PrinterStatus

from . import KittyConfigEntry
from .entity import KittyPrinterEntity
from .printer_coordinator import PrinterCoordinator

# A printer takes one command at a time.
PARALLEL_UPDATES = 1


@dataclass(frozen=True, kw_only=True)
class KittyPrinterButtonEntityDescription(ButtonEntityDescription):
    """A button that sends a printer one command."""

    press_fn: Callable[[PrinterCoordinator], Awaitable[PrinterStatus]]


PRINTER_BUTTONS: tuple[KittyPrinterButtonEntityDescription, ...] = (
    KittyPrinterButtonEntityDescription(
        key="pause",
        translation_key="pause_print",
        press_fn=lambda printer: printer.async_pause(),
    ),
    KittyPrinterButtonEntityDescription(
        key="resume",
        translation_key="resume_print",
        press_fn=lambda printer: printer.async_resume(),
    ),
    KittyPrinterButtonEntityDescription(
        key="cancel",
        translation_key="cancel_print",
        press_fn=lambda printer: printer.async_cancel(),
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: KittyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the job buttons of every printer."""
    for subentry_id, printer in entry.runtime_data.printers.items():
        async_add_entities(
            (KittyPrinterButton(printer, description) for description in PRINTER_BUTTONS),
            config_subentry_id=subentry_id,
        )


class KittyPrinterButton(KittyPrinterEntity, ButtonEntity):
    """Sends its command; a printer in the wrong state refuses it with the reason."""

    entity_description: KittyPrinterButtonEntityDescription

    @override
    async def async_press(self) -> None:
        """Send the command and wait until the printer shows it took effect."""
        await self.entity_description.press_fn(self.coordinator)
