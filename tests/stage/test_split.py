"""Prompt groups for the grouped hold-out: the vectorised key against the reference function."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_data.schema import normalised_prompt_key
from sc_data.stage.split import _dense_groups, prompt_group_codes


class TestPromptGroups:
    def reference_codes(self, prompts) -> np.ndarray:
        keys = [normalised_prompt_key(p) for p in prompts]
        index: dict[str, int] = {}
        return np.array([index.setdefault(k, len(index)) for k in keys])

    def assert_same_partition(self, prompts) -> None:
        got = prompt_group_codes(pa.array(prompts, pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))))
        ref = self.reference_codes(prompts)
        # Same partition: a bijection between the two labelings.
        pairs = set(zip(got.tolist(), ref.tolist(), strict=True))
        assert len(pairs) == len(set(got.tolist())) == len(set(ref.tolist()))

    @settings(max_examples=80, deadline=None)
    @given(
        st.lists(
            st.lists(
                st.tuples(
                    st.sampled_from(["user", "assistant"]),
                    st.text(alphabet=st.sampled_from(list("aAbB É\u00e9e\u0301\t\n\x0b\x1c\u00a0\u2003\u3000")), max_size=6),
                ),
                min_size=1,
                max_size=2,
            ),
            min_size=1,
            max_size=12,
        )
    )
    def test_matches_normalised_prompt_key(self, raw) -> None:
        self.assert_same_partition([[{"role": r, "content": c} for r, c in msgs] for msgs in raw])

    def test_real_data(self, shared_data: Path) -> None:
        prompts = []
        with open(shared_data / "paper" / "hh_rlhf_clean_gpt.jsonl", encoding="utf-8") as fh:
            for line in fh:
                prompts.append([{"role": "user", "content": json.loads(line)["prompt"].removeprefix("Human: ")}])
        with gzip.open(shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line)["chosen"].rsplit("\n\nAssistant:", 1)[0]
                prompts.append([{"role": "user", "content": text}])
        self.assert_same_partition(prompts)
        # The paper's set repeats some prompts (30 of its prompts occur more than once).
        codes = prompt_group_codes(pa.array(prompts[:3969]))
        assert len(np.unique(codes)) < 3969


class TestDenseGroups:
    @settings(max_examples=100, deadline=None)
    @given(groups=st.lists(st.integers(0, 50), min_size=1, max_size=80))
    def test_equals_numpy_unique(self, groups):
        codes = np.array(groups, dtype=np.int64)
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        got_inverse, got_first = _dense_groups(codes)
        np.testing.assert_array_equal(got_inverse, inverse)
        np.testing.assert_array_equal(got_first, first)
