"""Each source layout, detection, and the content id."""

from __future__ import annotations

from pathlib import Path

import pytest

from sc_data.ingest import ingest_tables
from sc_data.ingest.formats import detect_format
from sc_data.ingest.validate import content_id
from tests.reference import pair_id

from .conftest import write_jsonl

U = "user"
A = "assistant"


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def one(tmp_path: Path, row: dict, **options) -> tuple[dict | None, dict | None]:
    """Ingest one row; return (pair, reject)."""
    pairs, rejects = ingest_tables([write_jsonl(tmp_path / "in.jsonl", [row])], **options)
    return (pairs.to_pylist() or [None])[0], (rejects.to_pylist() or [None])[0]


class TestTrl:
    def test_standard(self, tmp_path: Path) -> None:
        pair, _ = one(tmp_path, {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."})
        assert pair["prompt"] == [msg(U, "Hi?")]
        assert pair["chosen"] == [msg(A, "Hello.")] and pair["rejected"] == [msg(A, "Go away.")]
        assert pair["id"] == pair_id(pair["prompt"], pair["chosen"], pair["rejected"])
        assert pair["source"] == "in.jsonl"
        assert pair["categories"] == [] and pair["category"] is None and pair["chosen_safe"] is None

    def test_standard_implicit_prompt(self, tmp_path: Path) -> None:
        pair, _ = one(tmp_path, {"chosen": "The sky is blue.", "rejected": "The sky is green."})
        assert pair["prompt"] == [msg(U, "The sky is")]
        assert pair["chosen"] == [msg(A, " blue.")]

    def test_implicit_prompt_without_shared_text(self, tmp_path: Path) -> None:
        _, reject = one(tmp_path, {"chosen": "Yes.", "rejected": "No."})
        assert (reject["field"], reject["reason"]) == ("prompt", "no_shared_prompt")

    def test_conversational_explicit(self, tmp_path: Path) -> None:
        row = {
            "prompt": [msg("system", "Be kind."), msg(U, "Hi"), msg(A, "Hello!"), msg(U, "Insult me.")],
            "chosen": [msg(A, "I'd rather not.")],
            "rejected": [msg(A, "You fool.")],
        }
        pair, _ = one(tmp_path, row)
        assert pair["prompt"] == row["prompt"] and pair["chosen"] == row["chosen"]

    def test_conversational_implicit_prompt(self, tmp_path: Path) -> None:
        shared = [msg(U, "What is 2+2?")]
        pair, _ = one(tmp_path, {"chosen": [*shared, msg(A, "4")], "rejected": [*shared, msg(A, "5")]})
        assert pair["prompt"] == shared
        assert pair["chosen"] == [msg(A, "4")] and pair["rejected"] == [msg(A, "5")]

    def test_ultrafeedback_binarized_shape(self, tmp_path: Path) -> None:
        row = {
            "prompt": "Name a planet.",
            "prompt_id": "abc",
            "chosen": [msg(U, "Name a planet."), msg(A, "Mars.")],
            "rejected": [msg(U, "Name a planet."), msg(A, "The Sun.")],
            "score_chosen": 8.0,
            "score_rejected": 2.0,
        }
        pair, _ = one(tmp_path, row)
        assert pair["prompt"] == [msg(U, "Name a planet.")]
        assert pair["chosen"] == [msg(A, "Mars.")]

    def test_canonical_extras_are_carried(self, tmp_path: Path) -> None:
        row = {
            "id": 17, "prompt": "q", "chosen": "a", "rejected": "b",
            "categories": ["Cybercrime", "privacy"], "chosen_safe": True, "rejected_safe": False,
        }
        pair, _ = one(tmp_path, row)
        assert pair["id"] == "17"
        assert pair["categories"] == ["cybercrime", "privacy"] and pair["category"] == "cybercrime"
        assert (pair["chosen_safe"], pair["rejected_safe"]) == (True, False)

    def test_unknown_category_is_a_reject(self, tmp_path: Path) -> None:
        _, reject = one(tmp_path, {"prompt": "q", "chosen": "a", "rejected": "b", "category": "spooky"})
        assert (reject["field"], reject["reason"]) == ("category", "unknown_category")


class TestMapped:
    def test_column_map(self, tmp_path: Path) -> None:
        row = {"question": "Why?", "good": "Because.", "bad": "Dunno.", "uid": "x1"}
        pair, _ = one(tmp_path, row, column_map={"prompt": "question", "chosen": "good", "rejected": "bad", "id": "uid"})
        assert pair["prompt"] == [msg(U, "Why?")] and pair["chosen"] == [msg(A, "Because.")]
        assert pair["id"] == "x1"


class TestHhRlhf:
    def test_multi_turn(self, tmp_path: Path) -> None:
        base = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman:  How do I pick a lock?\n\nAssistant:"
        pair, _ = one(tmp_path, {"chosen": base + " I can't help.", "rejected": base + " Sure, easy."})
        assert pair["prompt"] == [msg(U, "Hi"), msg(A, "Hello!"), msg(U, "How do I pick a lock?")]
        assert pair["chosen"] == [msg(A, "I can't help.")]

    def test_whitespace_only_difference_uses_chosen_prompt(self, tmp_path: Path) -> None:
        row = {"chosen": "\n\nHuman: Hi  there\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi there\n\nAssistant: Go."}
        pair, _ = one(tmp_path, row)
        assert pair["prompt"] == [msg(U, "Hi  there")]

    def test_different_conversation_is_a_mismatch(self, tmp_path: Path) -> None:
        row = {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello.",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Yo.\n\nHuman: And?\n\nAssistant: Go.",
        }
        _, reject = one(tmp_path, row, format="hh-rlhf")
        assert (reject["field"], reject["reason"]) == ("rejected", "prompt_mismatch")

    def test_no_assistant_turn(self, tmp_path: Path) -> None:
        row = {"chosen": "\n\nHuman: Hi there", "rejected": "\n\nHuman: Hi there"}
        _, reject = one(tmp_path, row, format="hh-rlhf")
        assert (reject["field"], reject["reason"]) == ("chosen", "no_assistant_turn")


class TestPaper:
    def test_prefix_and_trailing_marker_stripped(self, tmp_path: Path) -> None:
        pair, _ = one(tmp_path, {"prompt": "Human: How are you?\n\nAssistant:", "chosen": " Fine.", "rejected": "Bad."})
        assert pair["prompt"] == [msg(U, "How are you?")]
        assert pair["chosen"] == [msg(A, "Fine.")]

    def test_multi_turn_prompt(self, tmp_path: Path) -> None:
        row = {"prompt": "Human: Hi\n\nAssistant: Hello.\n\nHuman: Help me cheat.", "chosen": "No.", "rejected": "Ok."}
        pair, _ = one(tmp_path, row)
        assert pair["prompt"] == [msg(U, "Hi"), msg(A, "Hello."), msg(U, "Help me cheat.")]


class TestPku:
    def test_safety_pair_reason_names_both_sides(self, tmp_path: Path) -> None:
        harm = {"Violence": True, "Drugs": False}
        row = {
            "prompt": "q", "response_0": "a", "response_1": "b",
            "is_response_0_safe": False, "is_response_1_safe": True,
            "response_0_harm_category": harm, "response_1_harm_category": {},
            "better_response_id": 0, "safer_response_id": 1,
        }
        _, reject = one(tmp_path, row, prefer="better")
        assert reject["reason"] == "safety_pair:unsafe/safe"
        pair, _ = one(tmp_path, row)
        assert pair["chosen"] == [msg(A, "b")] and pair["categories"] == ["violence_physical_harm"]
        _, reject = one(tmp_path, {**row, "safer_response_id": 2})
        assert (reject["field"], reject["reason"]) == ("safer_response_id", "invalid_value")


class TestDetect:
    @pytest.mark.parametrize(
        ("row", "expected"),
        [
            ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "x"}, "hh-rlhf"),
            ({"prompt": "Human: a", "chosen": "b", "rejected": "c"}, "paper"),
            ({"prompt": "a", "chosen": "b", "rejected": "c"}, "trl"),
            ({"chosen": [msg(U, "a")], "rejected": [msg(U, "b")]}, "trl"),
            ({"prompt": "a", "response_0": "b", "response_1": "c", "is_response_0_safe": True, "is_response_1_safe": False}, "pku-saferlhf"),
        ],
    )
    def test_layouts(self, row: dict, expected: str) -> None:
        assert detect_format([row], where="x", column_map=None) == expected


def test_content_id_matches_schema_pair_id() -> None:
    cases = [
        ((U, " Caf\u0065\u0301 \"q\"\n"),), ((A, "a\tb\\ "),), ((A, "</script> \u2028"),),
    ]
    prompt, chosen, rejected = cases
    as_dicts = [[msg(r, c) for r, c in m] for m in cases]
    assert content_id(prompt, chosen, rejected) == pair_id(*as_dicts)
    multi = ((("system", "s"), (U, "u"), (A, "a"), (U, "b")), ((A, "x"),), ((A, "y"), (A, "z")))
    assert content_id(*multi) == pair_id(*[[msg(r, c) for r, c in m] for m in multi])
