"""Turn the exceptions a user's mistake causes into one line that names the key and what is allowed."""

from __future__ import annotations

import dataclasses

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from mpl_runner.errors import UserError


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _fields(object_type) -> str:
    if dataclasses.is_dataclass(object_type):
        return ", ".join(f.name for f in dataclasses.fields(object_type))
    return "see `mpl-run --cfg job`"


def one_line_error(err: BaseException) -> str | None:
    """The message for a user mistake, or None when ``err`` is a bug (which keeps its traceback)."""
    cause = err
    while cause is not None:  # our own check, maybe raised by a resolver while Hydra resolved the config
        if isinstance(cause, UserError):
            return str(cause)
        cause = cause.__cause__ or (cause.__context__ if isinstance(cause, OmegaConfBaseException) else None)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        options = [o for o in (err.options or []) if not o.startswith("schema_")]
        if group and options:
            return f"{group}={name} is not an option; choose one of: {', '.join(options)}"
        return _first_line(str(err))
    cause = err.__cause__
    if isinstance(err, ConfigCompositionException) and isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        return f"{cause.full_key} is not a config key; the keys there are: {_fields(cause.object_type)}"
    if isinstance(err, ConfigCompositionException) and isinstance(cause, ValidationError):
        return f"{cause.full_key}={cause.value!r}: {_first_line(cause.msg)}"
    if isinstance(err, OverrideParseException):
        return f"cannot parse the override: {_first_line(str(err))}"
    if isinstance(err, (ConfigCompositionException, OmegaConfBaseException)):
        detail = f" ({_first_line(str(cause))})" if cause is not None else ""
        return _first_line(str(err)).rstrip(".") + detail
    return None
