"""The labelled query set the router benchmarks replay stays well-formed as it grows."""

from collections import Counter
import json
from pathlib import Path

QUERIES = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "workshop_queries.jsonl"
# The labelling rules of benchmarks/data/README.md: a category decides the tier.
EXPECTED_TIER = {
    "device_command": "intent",
    "state_question": "local",
    "howto": "local",
    "fresh_fact": "search",
    "hard_reasoning": "cloud",
    "chitchat": "local",
}


def test_every_query_is_labelled_by_the_rules() -> None:
    lines = QUERIES.read_text(encoding="utf-8").splitlines()
    queries = [json.loads(line) for line in lines]

    assert len(queries) >= 220
    for query in queries:
        assert set(query) == {"text", "category", "expected"}, query
        assert query["text"].strip() == query["text"] != "", query
        assert EXPECTED_TIER[query["category"]] == query["expected"], query
    repeated = [text for text, n in Counter(q["text"].lower() for q in queries).items() if n > 1]
    assert repeated == []
    # Every category is there in numbers a benchmark can report on.
    assert min(Counter(q["category"] for q in queries).values()) >= 10
