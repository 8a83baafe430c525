"""The plan of an experiment: what a run will do, what it needs from outside this machine, what looks off.

``agentdistill run CONFIG --dry-run`` prints it after checking everything that can be checked without a
GPU, a model server or the hub; a real run prints it first, so the log of every run starts with what it
was asked to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Plan:
    """Steps (each with indented detail lines), external needs and warnings, in the order they were found."""

    title: str
    steps: list[tuple[str, list[str]]] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def step(self, text: str) -> list[str]:
        """Start a step; returns its list of detail lines to append to."""
        details: list[str] = []
        self.steps.append((text, details))
        return details

    def need(self, text: str) -> None:
        """Something the real run needs that a dry run does not touch (a GPU, a server, a hub download)."""
        if text not in self.needs:
            self.needs.append(text)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def render(self) -> str:
        lines = [self.title, ""]
        for number, (text, details) in enumerate(self.steps, start=1):
            lines.append(f"{number}. {text}")
            lines.extend(f"     {detail}" for detail in details)
        if self.needs:
            lines += ["", "Needs (not touched by a dry run):"]
            lines.extend(f"  - {text}" for text in self.needs)
        if self.warnings:
            lines += ["", "Warnings:"]
            lines.extend(f"  ! {text}" for text in self.warnings)
        return "\n".join(lines) + "\n"
