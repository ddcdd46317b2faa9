"""What a check found wrong, and what to do about it: the two halves of an InputProblem
before it is located in the file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Said:
    message: str
    hint: str = ""
