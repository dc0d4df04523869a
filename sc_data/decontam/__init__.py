"""Decontamination: remove pairs whose prompt is, or nearly is, a prompt of a user-given eval set.

``normalise`` / ``prompt_turns`` (what is compared), :mod:`.evalsets` (reading eval sets), :mod:`.match`
(the exact, n-gram and embedding methods) and :mod:`.pipeline` (the ``decontaminate`` verb).
"""

from sc_data.decontam.pipeline import DecontamOptions, DecontamResult, decontaminate

__all__ = ["DecontamOptions", "DecontamResult", "decontaminate"]
