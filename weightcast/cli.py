"""The `weightcast` console script. Each stage contributes a `Command` through the entry-point
group `weightcast.commands` (declared in pyproject.toml), so `zoo` never imports a later stage;
`python -m <stage>` runs the same command on its own."""

import argparse
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable, Sequence

from weightcast.errors import USER_ERROR_EXIT_CODE, WeightcastError
from weightcast.zoo.rundir import package_version

__all__ = ["Command", "config_command", "main", "run_command", "add_config_arguments"]


@dataclass(frozen=True)
class Command:
    name: str  # the subcommand: `weightcast <name>`
    help: str
    configure: Callable[[argparse.ArgumentParser], None]  # adds arguments and sets `func`


def add_config_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    """`--config FILE` and trailing `key.sub=value` overrides, the same for every stage."""
    parser.add_argument(
        "--config", metavar="FILE", help=f"YAML config (e.g. configs/{stage}/debug.yaml); defaults if omitted"
    )
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def config_command(
    name: str, stage: str, help: str, run: Callable[[argparse.Namespace], int | None]
) -> Command:
    """A stage's command that takes `--config FILE` and `key.sub=value` overrides and calls `run(args)`."""

    def configure(parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser, stage)
        parser.set_defaults(func=run)

    return Command(name, help, configure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="weightcast",
        description="Meta-learned weight predictors that speed up neural-network training. "
        "Stages in pipeline order: zoo -> collect -> train-predictor -> eval.",
    )
    parser.add_argument("--version", action="version", version=f"weightcast {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _commands():
        command.configure(subparsers.add_parser(command.name, help=command.help, description=command.help))
    return _dispatch(parser, argv)


def run_command(command: Command, argv: Sequence[str] | None = None) -> int:
    """`python -m <stage>`: one stage's command on its own."""
    parser = argparse.ArgumentParser(prog=f"weightcast {command.name}", description=command.help)
    command.configure(parser)
    return _dispatch(parser, argv)


def _commands() -> list[Command]:
    # pipeline order; commands added later come after, by name
    order = ["quickstart", "zoo", "collect", "train-predictor", "compare", "import", "publish", "eval"]
    found = [ep.load() for ep in entry_points(group="weightcast.commands")]
    return sorted(found, key=lambda c: (order.index(c.name) if c.name in order else len(order), c.name))


def _dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting positionals at the first option, so overrides given after an
    # option (`--config X a=1 --no-progress b=2`) come back as extras; they are overrides too.
    takes_overrides = hasattr(args, "overrides")
    unknown = [arg for arg in extra if arg.startswith("-") or "=" not in arg or not takes_overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except WeightcastError as err:  # every user error, from any stage: its message, no traceback
        print(f"weightcast: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
