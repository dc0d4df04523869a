"""Any other layout, through a column map (``--map prompt=question --map chosen=good ...``).

The map renames source columns to canonical ones; the renamed row is then read like a TRL row
(strings or message lists), so every TRL shape works under other column names. Columns that already
have canonical names and aren't mapped over are kept (``--map chosen=good --map rejected=bad`` on a
file with a ``prompt`` column uses that column).
"""

from __future__ import annotations

from typing import Any

from sc_data.ingest import trl
from sc_data.ingest.rows import Converter, Pair


def make_converter(source: str, column_map: dict[str, str]) -> Converter:
    """Converter that renames ``column_map`` (canonical -> source column) then reads TRL rows."""
    inner = trl.make_converter(source)
    items = tuple(column_map.items())

    def convert(row: dict[str, Any]) -> Pair:
        renamed = dict(row)
        for canonical, column in items:
            renamed[canonical] = row.get(column)
        return inner(renamed)

    return convert
