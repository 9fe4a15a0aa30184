"""The run templates KITTY ships: what a named run expands into and how its steps execute."""

from collections.abc import Mapping

from kittyai.orchestrator.templates.app_update import AppUpdateTemplate
from kittyai.orchestrator.templates.base import Template
from kittyai.orchestrator.templates.config_change import ConfigChangeTemplate
from kittyai.orchestrator.templates.fabricate import FabricateTemplate
from kittyai.orchestrator.templates.noop import NoopTemplate


def shipped_templates() -> Mapping[str, Template]:
    """Return the templates KITTY ships, by name."""
    # One entry per shipped template: add new ones to this tuple.
    templates: tuple[Template, ...] = (
        NoopTemplate(),
        AppUpdateTemplate(),
        ConfigChangeTemplate(),
        FabricateTemplate(),
    )
    return {template.name: template for template in templates}
