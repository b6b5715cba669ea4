"""Ships phoenix.js from npm inside the package, so an installed node serves the demo page
and the dashboard without a checkout. Everything else is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PHOENIX_JS = Path(__file__).parent / "node_modules" / "phoenix" / "priv" / "static"
SHIPPED = ("phoenix.mjs", "favicon.ico")


class BuildWithPhoenixJs(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # a checkout serves it straight from node_modules
        missing = [name for name in SHIPPED if not (PHOENIX_JS / name).is_file()]
        if missing:
            raise SystemExit(
                f"{PHOENIX_JS} lacks {', '.join(missing)}: run `npm ci` before building "
                "(the demo page and the dashboard ship phoenix.js from npm)"
            )
        vendor = Path(self.build_lib) / "switchboard" / "static" / "vendor"
        vendor.mkdir(parents=True, exist_ok=True)
        for name in SHIPPED:
            shutil.copy2(PHOENIX_JS / name, vendor / name)


setup(cmdclass={"build_py": BuildWithPhoenixJs})
