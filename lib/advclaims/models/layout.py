"""What the claims read of a network besides its logits, and the one-line errors when a layout does not give it:
its stages (``RESNET_STAGES``: conv1, layer0 ... layer4), with a user's own layout mapped onto them
(``--repro-stages``, ``advclaims import --stages``: the map travels with the model object it describes, as an
attribute, so nothing outside the model keeps it), and a ``features(x)`` / ``head(z)`` split (the information
bottleneck's place)."""

from __future__ import annotations

from torch import nn

_ATTRIBUTE = "advclaims_stage_map"  # (stage map {stage: module path}, the --repro-model role) on a user's model


class StagesMissing(ValueError):
    """A claim reads stages the model does not have; the message is one line naming them and the stage map to pass."""


class NoFeatureSplit(ValueError):
    """A model the bottleneck cannot be placed on (no features()/head() split, or features without two spatial
    positions); the message is one line saying what the model needs."""


def set_stages(model: nn.Module, stages: dict[str, str] | None, role: str | None) -> None:
    """Let the analyses find the claims' stage names in ``model`` through ``stages`` (a user's layout);
    ``role`` names its --repro-model role when a stage is missing."""
    object.__setattr__(model, _ATTRIBUTE, (dict(stages or {}), role))


def stage_map(model: nn.Module) -> tuple[dict[str, str], str | None]:
    """The stage map and role set for ``model`` (empty and None for the suite's own models)."""
    return getattr(model, _ATTRIBUTE, ({}, None))
