"""The README's example modules, as written: each follows a marker line
``<!-- tests/app/<test>.py runs this block, as written, as <name>.py ... -->``."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.processes import ROOT

_BLOCK = re.compile(
    r"<!-- tests/app/\w+\.py runs this block, as written, as (?P<name>[\w.]+)[^>]*-->\n"
    r"```python\n(?P<code>.*?)```",
    re.DOTALL,
)


def readme_examples() -> dict[str, str]:
    """File name -> source of every marked example in the README."""
    text = (ROOT / "README.md").read_text()
    return {match["name"]: match["code"] for match in _BLOCK.finditer(text)}


def write_examples(directory: Path, *names: str) -> Path:
    """Write the named README examples into ``directory``, as an app author would."""
    examples = readme_examples()
    for name in names:
        assert name in examples, f"the README has no example marked as {name}"
        (directory / name).write_text(examples[name])
    return directory
