"""Presets that were retired or renamed. A retired `conf/postprocess/<name>.yaml` has no `settings`. It names
this class as its `_target_`, so the schema check (`dear_exp.schema.validate`, run before any work) builds it,
and building it stops the run with one line that names the replacements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dear_exp.errors import DearError
from dear_exp.schema import Checked


@dataclass
class Retired(Checked):
    """`postprocess=<name>` is retired for `reason`; `use` names the presets to choose instead."""

    name: str
    reason: str
    use: str

    prefix: ClassVar[str] = "postprocess"

    def check(self) -> None:
        raise DearError(f"postprocess={self.name} is retired: {self.reason}; use {' '.join(self.use.split())}")
