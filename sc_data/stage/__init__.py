"""Staging: scored pairs -> difficulty -> splits -> tiers -> the staged dataset folder.

``difficulty`` (score columns -> one rank in [0, 1]), ``split`` (eval/dev hold-outs, budget),
``tiers`` (the tiering strategies), ``config`` (the recipe), ``plan`` (per-row decisions in the
fixed order), ``pipeline`` (the ``stage`` verb), ``export`` (the writer), ``card`` (the dataset
card), ``folder`` (the staged folder's layout, its reader and ``verify``), ``report`` (plots).
Nothing is imported here, so reading a staged folder does not pull in the writer or matplotlib.
"""
