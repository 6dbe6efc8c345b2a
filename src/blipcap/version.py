"""blipcap's version: the one place it is written.

``pyproject.toml`` reads it from here (``[tool.setuptools.dynamic]``), and every
record, report and ``--version`` imports it from here. It imports nothing, so any
module can read it without pulling in the package's public API.
"""

__version__ = "0.1.0"
