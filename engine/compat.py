"""What differs between the Python versions we support (3.10 and newer).

`tomllib` joined the standard library in 3.11; on 3.10 the same parser comes from `tomli`
(a dependency there only, see pyproject.toml). Import it as `from engine.compat import tomllib`.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["tomllib"]
