"""How sure the local model is of its answer, as one score from 0 to 1.

With token logprobs the score needs no extra call: the probability of the least
likely tokens (a low quantile, so one shaky token among many sure ones counts) and
how far the chosen token led its runner-up. Without logprobs the model grades its own
answer in a short second call.
"""

from collections.abc import Sequence
from dataclasses import dataclass
import math
import re

from kittyai.router.backends.base import ChatRequest, Message, TokenLogprob

# The quantile of token log-probabilities that stands for "the shaky part" of an answer.
LOW_QUANTILE = 0.1
SELF_CHECK_MAX_TOKENS = 4
_GRADE = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Confidence:
    """A score and the signals it was made of, for the decision log."""

    score: float
    signals: dict[str, float]


def from_logprobs(logprobs: Sequence[TokenLogprob]) -> Confidence | None:
    """Score an answer from its token logprobs; None when there are none."""
    if not logprobs:
        return None
    low_prob = math.exp(_quantile(sorted(token.logprob for token in logprobs), LOW_QUANTILE))
    margins = [
        math.exp(token.top[0]) - math.exp(token.top[1])
        for token in logprobs
        if len(token.top) >= 2  # noqa: PLR2004 - the chosen token and its runner-up
    ]
    signals = {"low_token_prob": low_prob}
    if margins:
        signals["top_margin"] = sum(margins) / len(margins)
        score = (low_prob + signals["top_margin"]) / 2
    else:
        score = low_prob
    return Confidence(score=min(max(score, 0.0), 1.0), signals=signals)


def self_check_request(messages: Sequence[Message], answer: str) -> ChatRequest:
    """Return the call that asks the model to grade its own answer from 0 to 10."""
    question = next(
        (
            str(message.get("content") or "")
            for message in reversed(messages)
            if message.get("role") == "user"
        ),
        "",
    )
    prompt = (
        "Grade the answer below. Reply with one number from 0 (wrong or unsure) "
        "to 10 (certainly right and complete), nothing else.\n\n"
        f"Question: {question}\n\nAnswer: {answer}"
    )
    return ChatRequest(
        messages=[{"role": "user", "content": prompt}],
        max_tokens=SELF_CHECK_MAX_TOKENS,
        temperature=0.0,
    )


def from_self_check(grade_text: str) -> Confidence:
    """Score an answer from the model's own grade; an unreadable grade scores 0."""
    match = _GRADE.search(grade_text)
    grade = min(int(match.group()), 10) if match else 0
    return Confidence(score=grade / 10, signals={"self_check": grade / 10})


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Return the `q` quantile of sorted values, interpolating linearly."""
    position = (len(sorted_values) - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] * (1 - weight) + sorted_values[upper] * weight
