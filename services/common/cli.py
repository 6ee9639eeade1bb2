"""The services' command line: every option short, and a mistake stops the service.

traitlets' parser warns about an unknown option and goes on with the defaults, and prints 70
lines of usage on a bad value; a service started by the hub must rather stop with one line
saying what is wrong (exit ``CONFIG_ERROR``), so that the hub's log shows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

from traitlets import Bool
from traitlets.config import Config, Configurable
from traitlets.config.loader import ArgumentError, KVArgParseConfigLoader, _KVArgParser

#: The exit status of a bad configuration or command line, as command-line tools use it.
CONFIG_ERROR = 2

#: Options that hold secrets, and the environment variable each can come from instead: the
#: command line is visible to every local user (``ps``), the config file and environment not.
SECRET_OPTIONS = {"api_token": "JUPYTERHUB_API_TOKEN", "db_url": "HUBSERVICES_DATABASE_URL"}
#: Options that must never come from the command line, so they get no short name either.
_NO_SHORT_OPTION = {"api_token"}


class _OneLineErrorParser(_KVArgParser):
    """argparse's errors as one line (through traitlets' config error), not 70 of usage."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(message)


class StrictArgLoader(KVArgParseConfigLoader):
    """A mistyped option (``--timout=60``) stops the service; traitlets would only warn."""

    parser_class = _OneLineErrorParser

    def _handle_unrecognized_alias(self, arg: str) -> None:
        raise ArgumentError(f"unrecognized option --{arg}")


def short_options(
    classes: Iterable[type[Configurable]], extra_aliases: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """traitlets aliases and flags: ``--timeout`` for ``--Culler.timeout``, dashed and
    underscored, for every option of ``classes``; ``--config`` for ``--config-file``.

    Booleans are both alias and flag, so ``--cull-users`` and ``--cull-users=false`` work.
    """
    aliases: dict[str, Any] = {"log-level": "Application.log_level", **extra_aliases}
    flags: dict[str, Any] = {}
    for cls in classes:
        for name, trait in cls.class_own_traits(config=True).items():
            if name in _NO_SHORT_OPTION:
                continue
            target = f"{cls.__name__}.{name}"
            keys = {name, name.replace("_", "-")}
            if name == "config_file":
                keys.add("config")
            for key in keys:
                aliases[key] = (target, trait.help)
                if isinstance(trait, Bool):
                    flags[key] = ({cls.__name__: {name: True}}, trait.help)
    return aliases, flags


def secret_on_command_line(cli_config: Config) -> str | None:
    """Why the command line must not carry one of its options (a token, a URL with a
    password), naming the config-file and environment ways; None if it carries no secret."""
    for section, options in cli_config.items():
        if not isinstance(options, Mapping):
            continue
        for name, value in options.items():
            if name in _NO_SHORT_OPTION or _has_password(value):
                env = f" or ${SECRET_OPTIONS[name]}" if name in SECRET_OPTIONS else ""
                return (
                    f"--{section}.{name} holds a secret, which every local user can read on "
                    f"the command line (ps): set it in the config file (--config){env}"
                )
    return None


def _has_password(value: Any) -> bool:
    """Whether ``value`` is, or holds, a URL with a password (``postgresql://u:pw@host/db``)."""
    if isinstance(value, str):
        try:
            return "://" in value and bool(urlsplit(value).password)
        except ValueError:  # not a URL after all (e.g. a stray "[")
            return False
    if isinstance(value, Mapping):
        return any(_has_password(v) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return any(_has_password(v) for v in value)
    return False
