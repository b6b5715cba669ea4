"""Where the files the server hands out live: installed, or in a checkout.

The wheel ships ``static/`` (with phoenix.js from npm in ``static/vendor/``, copied at
build time) and ``nginx/`` inside the package; a checkout has the same folders beside the
code (``switchboard/static`` links to them) and phoenix.js in ``node_modules``.
"""

from __future__ import annotations

from pathlib import Path

import switchboard

PACKAGE_DIR = Path(switchboard.__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
NGINX_TEMPLATE = PACKAGE_DIR / "nginx" / "switchboard.conf.template"
_CHECKOUT_PHOENIX = PACKAGE_DIR.resolve().parent / "node_modules" / "phoenix" / "priv" / "static"


def phoenix_js_dir() -> Path:
    """The folder holding ``phoenix.mjs``: shipped in the package, or npm's in a checkout."""
    shipped = STATIC_DIR / "vendor"
    return shipped if (shipped / "phoenix.mjs").is_file() else _CHECKOUT_PHOENIX
