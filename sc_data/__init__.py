"""sc-data: curriculum preference datasets for safety alignment.

The Python API is :mod:`sc_data.api`, one function per CLI verb (``ingest``, ``score``,
``stage``, ``verify``, ``report``, ``publish``, ``pull``, ``train``, ``evaluate``, ``inspect``).
``import sc_data`` stays cheap: nothing heavy is imported until a verb is used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
