"""Turn the exceptions a user's mistake causes into one line that names the key and what is allowed."""

from __future__ import annotations

import dataclasses
import errno
import re

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from mpl_runner.gates.resolvers import listed_option
from mpl_runner.core.errors import UserError


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
    broken = _yaml_error(err)
    if broken is not None:  # (a YAML file under --config-dir / conf/ that does not parse)
        return broken
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        options = [o for o in (err.options or []) if listed_option(o)]  # (no schema_*, no *_common)
        if group and options:
            return f"{group}={name} is not an option; choose one of: {', '.join(options)}"
        return _first_line(str(err))
    cause = err.__cause__
    if isinstance(err, ConfigCompositionException) and isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        return f"{cause.full_key} is not a config key; the keys there are: {_fields(cause.object_type)}"
    if isinstance(err, ConfigCompositionException) and isinstance(cause, ValidationError):
        return f"{cause.full_key}={cause.value!r}: {_first_line(cause.msg)}"
    if isinstance(err, OverrideParseException):
        return _parse_error(err)
    preset = _PRESET_KEY.search(str(err)) if isinstance(err, ConfigCompositionException) else None
    if preset is not None:  # (e.g. experiment=digits_mpl method=supervised; the message ended after its colon)
        group = preset["key"].split(".")[0]
        return (f"{preset['where'].replace('/', '=', 1)} sets {preset['key']}, a key that {preset['type']} (the "
                f"{group} chosen) does not have: the preset is made for another {group}; leave {group}=... out to "
                f"keep the preset's {group}, or choose a preset made for this one (mpl-run --help lists them)")
    if isinstance(err, ConfigCompositionException) and str(err).startswith("Ambiguous value"):
        # (a sweep without -m: Hydra's own ways out, "add --multirun" among them, all on the one line)
        return "; ".join(line.strip() for line in str(err).strip().splitlines())
    if isinstance(err, (ConfigCompositionException, OmegaConfBaseException)):
        detail = f" ({_first_line(str(cause))})" if cause is not None else ""
        key = getattr(err, "full_key", None)  # (e.g. hydra.run.dir=${nope}: Hydra resolves it itself)
        return (f"{key}: " if key and key not in str(err).splitlines()[0] else "") + \
            _first_line(str(err)).rstrip(".") + detail
    return _group_value(err) or _run_dir_error(err)


#: Hydra's message for a key a preset sets that the chosen option's schema lacks
_PRESET_KEY = re.compile(r"In '(?P<where>[^']+)': Config(?:Key|Attribute)Error raised while composing config:\s*"
                         r"Key '[^']+' not in '(?P<type>[^']+)'\s*full_key: (?P<key>\S+)")


def _parse_error(err: OverrideParseException) -> str:
    """An override Hydra's grammar cannot read, and how to write it so that it can (no parser jargon)."""
    from mpl_runner.record.run_dirs import hydra_quote, shell_word

    line = err.override
    key, _, value = line.partition("=")
    if value.rstrip().endswith(","):
        return (f"cannot read the override {line!r}: a sweep list ends with a comma; leave the last one out: "
                f"{shell_word(f'{key}={value.rstrip().rstrip(chr(44))}')}")
    if value.startswith("~"):
        return (f"cannot read the override {line!r}: ~ is not expanded in an override; write the path out, e.g. "
                f"{key}=$HOME{value[1:]} (the shell expands $HOME)")
    what = ("characters other than ASCII" if not line.isascii() else
            "characters Hydra's override grammar gives a meaning (brackets, parentheses, braces, = , quotes)")
    return (f"cannot read the override {line!r}: its value holds {what}; if it is text or a path, quote it for Hydra "
            f"and the shell: {shell_word(f'{key}={hydra_quote(value)}')}")


def _yaml_error(err: BaseException) -> str | None:
    """A config file that is not valid YAML: the file, line and column, and what the parser found there."""
    import yaml

    seen = err
    while seen is not None and not isinstance(seen, yaml.YAMLError):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    mark = getattr(seen, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "a config file"
    problem = " ".join(filter(None, (getattr(seen, "context", None), getattr(seen, "problem", None)))) or str(seen)
    return f"{where}: not valid YAML: {' '.join(problem.split())}"


def _group_value(err: BaseException) -> str | None:
    """Hydra's bare ValueError for a config group set to something other than an option's name (``method=null``,
    ``method=3``): the override and the group's options, from the frame that raised it."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if not isinstance(err, ValueError) or tb is None or \
            tb.tb_frame.f_globals.get("__name__") != "hydra._internal.defaults_list":
        return None
    override, repo = tb.tb_frame.f_locals.get("override"), tb.tb_frame.f_locals.get("repo")
    if override is None or repo is None:
        return None
    group = override.key_or_group
    options = sorted(o for o in repo.get_group_options(group) if listed_option(o))
    return f"{override.input_line} is not allowed: {group} takes the name of one of its options: {', '.join(options)}"


def _run_dir_error(err: BaseException) -> str | None:
    """An OSError while Hydra made the run dir, opened its log there or wrote its record (before the run started:
    no frame of the task on the way): a run dir that is a file, or a place this user cannot write."""
    os_error = err
    while os_error is not None and not isinstance(os_error, OSError):
        os_error = os_error.__cause__ or os_error.__context__
    if os_error is None or os_error.errno is None or _in_task(err):
        return None
    in_the_way = " (a file is in the way)" if os_error.errno in (errno.EEXIST, errno.ENOTDIR) else ""
    return f"hydra.run.dir: cannot make or write the run dir: {os_error.filename}: {os_error.strerror}{in_the_way}"


def _in_task(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "hydra_main" and frame.f_globals.get("__name__") == "mpl_runner.cli.main":
            return True
        tb = tb.tb_next
    return False
