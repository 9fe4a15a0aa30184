"""Who asked: the Home Assistant user behind a service call, by the name others see."""

from homeassistant.core import Context, HomeAssistant


async def async_user_name(hass: HomeAssistant, context: Context) -> str | None:
    """Return the name of the signed-in user a call came from; None without one.

    Calls from automations and scripts carry no user, and neither do those of a
    notification's button: the automation that answers it runs on its own.
    """
    if context.user_id is None:
        return None
    user = await hass.auth.async_get_user(context.user_id)
    return user.name if user is not None and user.name else None
