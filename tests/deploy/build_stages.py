"""A small reader of ``services/Dockerfile`` for the tests: its stages and their instructions.

No Docker engine runs here, so the tests check the Dockerfile's structure (stages, user,
entrypoint) and repeat what its build steps do (which files it copies, the Python it runs) from
what this reader returns. It understands what the Dockerfile uses: comments, line continuations,
``ARG`` before the first ``FROM``, ``FROM [--platform=…] IMAGE AS NAME``, and instructions as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "services" / "Dockerfile"

_FROM = re.compile(
    r"^(?:--platform=(?P<platform>\S+)\s+)?(?P<image>\S+)(?:\s+AS\s+(?P<name>\S+))?$", re.I
)


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword in upper case, its arguments as written, its first line."""

    keyword: str
    value: str
    line: int


@dataclass(frozen=True)
class Stage:
    """One build stage: ``FROM [--platform=PLATFORM] IMAGE AS NAME`` and what follows it."""

    name: str
    image: str
    platform: str | None
    instructions: tuple[Instruction, ...]

    def values(self, keyword: str) -> list[str]:
        """The arguments of every ``keyword`` instruction of this stage, in order."""
        return [i.value for i in self.instructions if i.keyword == keyword.upper()]

    def args(self) -> dict[str, str]:
        """The stage's ``ARG NAME=DEFAULT`` build arguments and their defaults ("" if none)."""
        args: dict[str, str] = {}
        for value in self.values("ARG"):
            name, _, default = value.partition("=")
            args[name] = default
        return args

    def expand(self, value: str) -> str:
        """``value`` with ``${NAME}`` of the stage's build arguments at their defaults."""
        args = self.args()
        return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), value)


def read_instructions(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile, continuation lines joined as the builder joins them.

    A line ending in a backslash continues on the next; the backslash and the newline go, the
    next line's indentation stays. Comment lines are dropped, also inside a continuation.
    """
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        keyword, _, value = "".join(pending).strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        pending = []
    if pending:
        raise ValueError(f"Dockerfile ends inside a continuation that began on line {start}")
    return instructions


def read_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The build stages of the Dockerfile at ``path``, in order (the last is the image)."""
    stages: list[Stage] = []
    current: tuple[str, str, str | None, list[Instruction]] | None = None
    for instruction in read_instructions(path.read_text()):
        if instruction.keyword == "FROM":
            match = _FROM.match(instruction.value)
            if match is None:
                raise ValueError(
                    f"{path}:{instruction.line}: unreadable FROM {instruction.value!r}"
                )
            if current is not None:
                stages.append(Stage(current[0], current[1], current[2], tuple(current[3])))
            name = match["name"] or str(len(stages))
            current = (name, match["image"], match["platform"], [])
        elif current is not None:
            current[3].append(instruction)
    if current is None:
        raise ValueError(f"{path}: no FROM instruction")
    stages.append(Stage(current[0], current[1], current[2], tuple(current[3])))
    return stages


def stage(name: str, path: Path = DOCKERFILE) -> Stage:
    """The stage called ``name``; a KeyError names the stages there are."""
    stages = {s.name: s for s in read_stages(path)}
    if name not in stages:
        raise KeyError(f"{path}: no stage {name!r}; stages: {sorted(stages)}")
    return stages[name]
