"""The licence of one input: ``--license``, else a REUSE ``<file>.license`` sidecar, else its layout's.

A layout's licence (``formats.Format.license``) is right for the public set that layout comes
from (PKU-SafeRLHF is CC-BY-NC-4.0) but not for other data written in that layout: sc-data's own
bundled examples are in the PKU layout and are Apache-2.0. So a licence the user or the file
declares wins: ``IngestOptions.license`` for every input of a run, or a sidecar beside the file
in the REUSE convention (https://reuse.software/spec/: ``pairs.jsonl.license`` holding a line
``SPDX-License-Identifier: Apache-2.0``), which is how the bundled examples carry theirs.
"""

from __future__ import annotations

import re
from pathlib import Path

from sc_data.errors import InputError

#: A licence id as SPDX and the Hub write them (``Apache-2.0``, ``cc-by-nc-4.0``, ``other``); no expressions.
LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")
_SPDX_LINE = re.compile(r"^\s*SPDX-License-Identifier:\s*(\S+)\s*$", re.MULTILINE)


def sidecar_of(path: Path | None) -> Path | None:
    """The REUSE sidecar of a local input (``<name>.license`` beside it), if there is one."""
    if path is None:
        return None
    sidecar = path.with_name(path.name + ".license")
    return sidecar if sidecar.is_file() else None


def declared_license(path: Path | None, option: str | None) -> tuple[str | None, str | None]:
    """``(licence, where it came from)`` declared for an input, or ``(None, None)`` to use its layout's.

    Args:
        path: the input file or folder (None for Hub datasets and in-memory tables).
        option: ``IngestOptions.license``; it wins over a sidecar.

    Raises:
        InputError: the sidecar holds no single valid ``SPDX-License-Identifier`` line.
    """
    if option is not None:
        return option, "--license"
    sidecar = sidecar_of(path)
    if sidecar is None:
        return None, None
    found = _SPDX_LINE.findall(sidecar.read_text("utf-8"))
    if len(found) != 1 or not LICENSE_ID.fullmatch(found[0]):
        raise InputError(
            f"{sidecar}: a licence sidecar needs exactly one line 'SPDX-License-Identifier: <id>' "
            f"(e.g. Apache-2.0), found {found or 'none'}; fix the file or pass --license"
        )
    return found[0], str(sidecar)
