"""The command registry: every ``/mesh_*`` command with its arguments declared once, as data.

Each surface is built from this one table: the one-shot CLI's subcommands
(``mesh_tui.cli``), the ``/mesh_*`` line (the cockpit's command line and a
headless node's standard input, both through ``run_command``), the command
palette and the help screen. The CLI and the line share one argparse builder,
so the two cannot disagree about an argument.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import MeshError, UsageError

if TYPE_CHECKING:
    from ..manager import AgentMeshManager

# The surfaces a command can appear on.
CLI = "cli"          # a ``mesh-tui`` one-shot subcommand (a short-lived client node)
LINE = "line"        # typed as ``/mesh_*`` in the cockpit or on a headless node's stdin
PALETTE = "palette"  # the cockpit's command palette (ctrl+p)
HELP = "help"        # the cockpit's help screen and ``/mesh_help``
SURFACES = (CLI, LINE, PALETTE, HELP)
EVERYWHERE = frozenset(SURFACES)
IN_A_NODE = frozenset({LINE, PALETTE, HELP})  # needs a running node: no one-shot subcommand


@dataclass(frozen=True)
class CommandResult:
    """What a command did: ``text`` for people, ``data`` for ``--json`` and headless JSON lines.

    ``bare`` is what the one-shot CLI prints instead of ``text`` when a script
    wants one value (a task id, a key, a JSON value); ``warning`` goes to its
    stderr; ``exit_code`` is its exit status when the command did not succeed
    (1 task failed or dead-lettered, 2 usage, 3 no node can take it or timed out).
    """

    text: str
    data: Any = None
    ok: bool = True
    exit_code: int = 0
    bare: str | None = None
    warning: str | None = None


Runner = Callable[["AgentMeshManager", argparse.Namespace], Awaitable[CommandResult]]


@dataclass(frozen=True)
class Arg:
    """One argument of a command, declared once for every surface.

    A positional when ``flag`` is None, else an option (``--payload``). ``type``
    converts the text as argparse does (a ValueError or ArgumentTypeError is a
    usage error); ``decode`` then turns it into what the command gets (JSON, a
    version number) and raises ValueError with the reason.
    """

    dest: str
    help: str = ""
    flag: str | None = None
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    default: Any = None
    optional: bool = False    # a positional that may be left out
    repeatable: bool = False  # an option given several times collects a list
    switch: bool = False      # an option without a value: True when given
    metavar: str | None = None
    decode: Callable[[str], Any] | None = None
    rest: bool = False        # the last positional of a /mesh_ line takes the rest of the line as typed (raw JSON)
    bare: bool = False        # an option that may also be given as a trailing positional (``/mesh_tasks running``)

    @property
    def label(self) -> str:
        """How usage lines and errors name the value."""
        return self.metavar or self.dest.upper()

    @property
    def name(self) -> str:
        return self.flag or self.label

    @property
    def positional(self) -> bool:
        return self.flag is None or self.bare

    def usage(self) -> str:
        if self.flag is None:
            return f"[{self.label}]" if self.optional else self.label
        given = self.flag if self.switch else f"{self.flag} {self.label}"
        if self.bare:
            return f"[[{self.flag}] {self.label}]"
        return f"[{given}]..." if self.repeatable else f"[{given}]"


@dataclass(frozen=True)
class Command:
    """One ``/mesh_*`` command: what it does, its arguments, where it appears, and the code that runs it."""

    name: str
    summary: str
    run: Runner
    args: tuple[Arg, ...] = ()
    aliases: tuple[str, ...] = field(default=())
    surfaces: frozenset[str] = EVERYWHERE

    @property
    def cli_name(self) -> str:
        """The one-shot subcommand: ``/mesh_status`` → ``status``."""
        return self.name.removeprefix("/mesh_")

    @property
    def usage(self) -> str:
        return " ".join([self.name, *(a.usage() for a in self.args)])

    @property
    def takes_arguments(self) -> bool:
        return bool(self.args)

    def on(self, surface: str) -> bool:
        return surface in self.surfaces


REGISTRY: dict[str, Command] = {}


def command(name: str, summary: str, *args: Arg, aliases: tuple[str, ...] = (),
            surfaces: frozenset[str] = EVERYWHERE) -> Callable[[Runner], Runner]:
    """Register the decorated coroutine as command ``name`` taking ``args``."""
    def wrap(fn: Runner) -> Runner:
        REGISTRY[name] = Command(name, summary, fn, tuple(args), aliases, surfaces)
        return fn
    return wrap


def on_surface(surface: str) -> list[Command]:
    """The commands that appear on ``surface``, in registry order."""
    return [cmd for cmd in REGISTRY.values() if cmd.on(surface)]


def lookup(word: str) -> Command | None:
    """The command a typed word names: ``/mesh_status``, ``status``, ``/status`` or an alias."""
    word = word.strip()
    key = word if word.startswith("/") else f"/{word}"
    if key in REGISTRY:
        return REGISTRY[key]
    if not key.startswith("/mesh_") and f"/mesh_{key[1:]}" in REGISTRY:
        return REGISTRY[f"/mesh_{key[1:]}"]
    for cmd in REGISTRY.values():
        if key in cmd.aliases:
            return cmd
    return None


def complete(prefix: str) -> list[str]:
    """Line command names that start with ``prefix`` (for Tab completion)."""
    return sorted(cmd.name for cmd in on_surface(LINE) if cmd.name.startswith(prefix))


# -- value types and decoders ------------------------------------------------------------------

def json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


# -- one argparse builder for the CLI and the line -----------------------------------------------

BARE_PREFIX = "bare_"


def add_arguments(parser: argparse.ArgumentParser, cmd: Command) -> None:
    """Declare ``cmd``'s arguments on ``parser`` (a CLI subparser or the line parser)."""
    for a in cmd.args:
        if a.flag is None:
            parser.add_argument(a.dest, nargs="?" if a.optional else None, type=a.type, choices=a.choices,
                                default=a.default, metavar=a.label, help=a.help or None)
            continue
        if a.switch:
            parser.add_argument(a.flag, dest=a.dest, action="store_true", help=a.help or None)
        else:
            # append with a None default: a shared list default would grow across parses
            parser.add_argument(a.flag, dest=a.dest, action="append" if a.repeatable else "store", type=a.type,
                                choices=a.choices, default=None if a.repeatable else a.default,
                                metavar=a.label, help=a.help or None)
        if a.bare:
            parser.add_argument(BARE_PREFIX + a.dest, nargs="?", type=a.type, choices=a.choices, metavar=a.label,
                                help=f"same as {a.flag} {a.label}")


def finish(cmd: Command, ns: argparse.Namespace) -> argparse.Namespace:
    """Settle what argparse parsed into what ``cmd.run`` gets: bare forms merged, lists, decoded values."""
    values = vars(ns)
    for a in cmd.args:
        if a.bare:
            given = values.pop(BARE_PREFIX + a.dest, None)
            if given is not None:
                if values.get(a.dest) not in (None, a.default, given):
                    raise UsageError(f"{cmd.name}: {a.label} given twice ({values[a.dest]!r} and {given!r})")
                values[a.dest] = given
        if a.repeatable and values.get(a.dest) is None:
            values[a.dest] = []
        if a.decode is not None and isinstance(values.get(a.dest), str):
            try:
                values[a.dest] = a.decode(values[a.dest])
            except ValueError as exc:
                raise UsageError(f"{a.name} {exc}") from None
    return ns


class _LineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", hint=f"usage: {self.usage}")


_PARSERS: dict[str, tuple[Command, argparse.ArgumentParser]] = {}


def line_parser(cmd: Command) -> argparse.ArgumentParser:
    """The argparse parser of ``cmd``'s ``/mesh_*`` line; it raises UsageError and never exits."""
    cached = _PARSERS.get(cmd.name)
    if cached is not None and cached[0] is cmd:
        return cached[1]
    parser = _LineParser(prog=cmd.name, usage=cmd.usage, add_help=False)
    add_arguments(parser, cmd)
    _PARSERS[cmd.name] = (cmd, parser)
    return parser


_WORD = re.compile(r"""(?:[^\s'"\\]+|\\.|'[^']*'|"(?:[^"\\]|\\.)*")+""", re.DOTALL)


def _option(cmd: Command, word: str) -> Arg | None:
    """The option ``word`` names (argparse's unique-prefix rule included), if any."""
    if not word.startswith("--"):
        return None
    name = word.partition("=")[0]
    found = [a for a in cmd.args if a.flag is not None and a.flag.startswith(name)]
    exact = [a for a in found if a.flag == name]
    return (exact or found)[0] if len(exact or found) == 1 else None


def split_line(cmd: Command, text: str) -> list[str]:
    """Shell-like words of a ``/mesh_*`` line, except that a ``rest`` positional keeps the rest of the line raw."""
    positionals = [a for a in cmd.args if a.positional]
    words: list[str] = []
    index = seen = 0
    expect_value = False
    while True:
        index = len(text) - len(text[index:].lstrip())
        if index >= len(text):
            return words
        match = _WORD.match(text, index)
        if match is None:
            raise UsageError(f"{cmd.name}: unbalanced quote in {text[index:]!r}")
        option = None if expect_value else _option(cmd, match.group())
        if not expect_value and option is None and seen < len(positionals) and positionals[seen].rest:
            return [*words, "--", text[index:].strip()]
        try:
            word = "".join(shlex.split(match.group()))
        except ValueError as exc:
            raise UsageError(f"{cmd.name}: {exc}") from None
        words.append(word)
        index = match.end()
        if expect_value:
            expect_value = False
        elif option is not None:
            expect_value = not option.switch and "=" not in word
        elif word != "--":
            seen += 1


def parse_line(cmd: Command, text: str) -> argparse.Namespace:
    """The arguments of ``cmd`` given on a ``/mesh_*`` line (the text after the command name)."""
    return finish(cmd, line_parser(cmd).parse_args(split_line(cmd, text)))


async def run_command(mesh: AgentMeshManager, line: str) -> CommandResult:
    """Parse and run one ``/mesh_*`` line; errors come back as a failed result, never raised."""
    parts = line.strip().split(maxsplit=1)
    if not parts:
        return CommandResult("", ok=True)
    head, rest = parts[0], parts[1] if len(parts) > 1 else ""
    cmd = lookup(head)
    if cmd is None or not cmd.on(LINE):
        return CommandResult(f"error: unknown command {head!r} (try /mesh_help)", ok=False, exit_code=2)
    try:
        return await cmd.run(mesh, parse_line(cmd, rest))
    except MeshError as exc:
        return CommandResult(f"error: {exc}", ok=False, exit_code=exc.exit_code)
