"""The services' command line: every option short, and a mistake stops the service.

traitlets' parser warns about an unknown option and goes on with the defaults, and prints 70
lines of usage on a bad value; a service started by the hub must rather stop with one line
saying what is wrong (exit ``CONFIG_ERROR``), so that the hub's log shows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from traitlets import Bool
from traitlets.config import Configurable
from traitlets.config.loader import ArgumentError, KVArgParseConfigLoader, _KVArgParser

#: The exit status of a bad configuration or command line, as command-line tools use it.
CONFIG_ERROR = 2

#: Options that must never come from the command line: argv is visible to every local user.
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
