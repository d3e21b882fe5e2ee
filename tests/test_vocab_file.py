import json

import pytest

from data_prep.common.errors import InputError
from data_prep.entities.vocab_file import (
    EntityEntry,
    EntityVocab,
    read_entity_vocab,
    special_entries,
    write_entity_vocab,
    write_hf_entity_vocab,
)
from data_prep.pages.redirects import RedirectResolver


def test_redirect_chains_and_loops():
    r = RedirectResolver({"A": "B", "B": "C", "X": "Y", "Y": "X", "Z": "X", "Self": "Self"})
    assert r.resolve("A") == "C"
    assert r.resolve("B") == "C"
    assert r.resolve("C") == "C"  # not a redirect
    assert r.resolve("Unrelated") == "Unrelated"
    assert r.resolve("X") is None and r.resolve("Y") is None and r.resolve("Z") is None
    assert r.resolve("Self") is None
    assert r.loops == {"X", "Y", "Z", "Self"}


def _vocab():
    return special_entries() + [
        EntityEntry(4, "Q1490", (("Tokyo", "en"), ("東京都", "ja")), 10),
        EntityEntry(5, None, (("Lonely page", "en"),), 3),
    ]


def test_jsonl_round_trip_and_lookup(tmp_path):
    p = tmp_path / "v.jsonl"
    write_entity_vocab(p, _vocab())
    lines = p.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"id": 0, "qid": None, "entities": [["[PAD]", None]], "count": 0}
    assert json.loads(lines[4])["entities"] == [["Tokyo", "en"], ["東京都", "ja"]]
    v = read_entity_vocab(p)
    assert len(v) == 6
    assert v.lookup("ja", "東京都") == 4 and v.lookup("en", "Tokyo") == 4
    assert v.lookup("de", "Tokyo") is None


def test_hf_format_round_trip(tmp_path):
    p = tmp_path / "entity_vocab.json"
    write_hf_entity_vocab(p, EntityVocab(_vocab()))
    flat = json.loads(p.read_text(encoding="utf-8"))
    assert flat["[PAD]"] == 0 and flat["[MASK2]"] == 3
    assert flat["en:Tokyo"] == 4 and flat["ja:東京都"] == 4 and flat["en:Lonely page"] == 5
    v = read_entity_vocab(p)
    assert v.lookup("ja", "東京都") == 4 and len(v) == 6


def test_duplicate_id_is_one_clear_error(tmp_path):
    p = tmp_path / "bad.jsonl"
    lines = [e.to_json() for e in _vocab()]
    lines[5] = lines[5].replace('"id": 5', '"id": 4')
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:6: duplicate entity id 4"):
        read_entity_vocab(p)


def test_long_chains_resolve_the_same_whatever_the_visiting_order():
    chain = {f"C{i}": f"C{i + 1}" for i in range(20)}  # C0 -> ... -> C20 (an article)
    for order in (chain, dict(reversed(list(chain.items())))):
        r = RedirectResolver(order, max_hops=16)
        assert r.resolve("C5") == "C20"  # 15 hops: within the bound
        assert r.resolve("C4") is None  # 16 hops: treated like a loop
        assert r.resolve("C19") == "C20"
