"""Exception hierarchy: every failure embodyhub raises on purpose is an ``EmbodyHubError``."""


class EmbodyHubError(Exception):
    """Base class of all embodyhub errors."""


class URDFError(EmbodyHubError, ValueError):
    """A URDF was rejected; the message names the offending element."""


class KinematicsError(EmbodyHubError, ValueError):
    """A kinematic request cannot be served (no chain between two links, floating joint in a chain, ...)."""


class InvalidActionError(EmbodyHubError, ValueError):
    """An action or joint vector is malformed: wrong shape, NaN or infinite values."""


class EmbodimentMismatchError(EmbodyHubError, ValueError):
    """Two embodiment descriptions (model, adapter, robot) disagree."""


class DatasetError(EmbodyHubError, ValueError):
    """A dataset on disk is missing, malformed, or does not match what is asked of it."""


class ConfigError(EmbodyHubError, ValueError):
    """A model configuration is invalid (non-positive sizes, another model type)."""


class RecipeError(EmbodyHubError, ValueError):
    """A recipe file is missing, unreadable, or holds keys its stage does not know."""
