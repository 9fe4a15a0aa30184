"""What a chat turn asks, as far as caching and routing care: fast English rules.

A cached answer is only right when the question's answer does not move: questions
about the home's current state (the door, the lights, the print) and about fresh
facts (news, prices, releases, the weather) must always reach a model. The rules
lean towards "not cacheable": a needless cache miss costs one model call, while a
served stale state ("the door is locked") is a wrong answer.
"""

from collections.abc import Iterable
from dataclasses import dataclass
import hashlib
import json
import re
from typing import Any

type Message = dict[str, Any]

# A year from this one on asks about the present or the future.
FIRST_FRESH_YEAR = 2025

_FRESHNESS_CUES = re.compile(
    r"""
    \b(?:
        latest | newest | most\ recent | recent(?:ly)? | up[\s-]to[\s-]date
      | (?:current|new|newer|next|upcoming|stable|beta)\s+
            (?:version|release|firmware|update|model|price|rate)s?
      | released | release\ (?:date|notes) | changelog | what(?:'s|\ is)\ new\ in
      | (?:update|upgrade)s?\ available
      | is\ there\ (?:an?\ )?(?:new\ |newer\ )?(?:update|upgrade|version)
      | (?:firmware|software|os|bios)\ (?:version|release|update)s?
      | version\ \d+(?:\.\d+)* | v\d+\.\d+(?:\.\d+)*
      | when\b[^?.!]{0,40}\b((?:come|came|coming)\ out) | launched | launch\ date | announced
      | news | headlines? | trending
      | prices? | priced | pricing | how\ much\ (?:is|are|does|do)\b[^?.!]{0,40}\b(cost)
      | in\ stock | on\ sale | exchange\ rate | stock\ (?:price|market)
      | today(?:'s)? | tonight | tomorrow(?:'s)? | yesterday(?:'s)? | right\ now
      | this\ (?:week|weekend|month|year|morning|afternoon|evening|season)
      | last\ (?:night|week|weekend)
      | weather | forecasts?
      | will\ it\ (?:rain|snow|storm|freeze|be\ (?:hot|cold|sunny|windy|warm))
      | (?:final|latest|live)\ score | score\ of\ the | who\ won | who\ is\ winning | standings
      | (?:ceo|president|prime\ minister)\ of
    )\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_YEAR = re.compile(r"\b(20\d\d)\b")

# Things in a home or a shop whose state Home Assistant knows.
_DEVICES = (
    r"lights?|lamps?|doors?|garage|gate|windows?|blinds?|shades?|covers?|curtains?|locks?"
    r"|fans?|heaters?|heating|thermostat|ac|air\ con(?:ditioning|ditioner)?|hvac|plugs?"
    r"|outlets?|sockets?|switch(?:es)?|printers?|prints?|print\ job|nozzle|hot\ ?end|bed"
    r"|laser|cnc|router|spindle|compressor|extractor|dust\ collector|vacuum|kiln|oven|stove"
    r"|washer|washing\ machine|dryer|dishwasher|kettle|soldering\ iron|alarm|cameras?"
    r"|sensors?|devices?|tv|speakers?|music|battery|car|charger|boiler|pump|sprinklers?"
    r"|valve|freezer|fridge|mailbox|heat\ pump|solar|inverter"
)
# What such a thing can be right now, in yes/no questions about one of them.
_STATES = (
    r"on|off|open|opened|closed|shut|locked|unlocked|running|printing|cutting|paused"
    r"|stopped|idle|busy|done|finished|complete|completed|failed|stuck|home|away|armed"
    r"|disarmed|triggered|charging|charged|plugged\ in|connected|disconnected|online"
    r"|offline|unavailable|working|playing|heating|heated|cooling|hot|warm|cold|empty|full"
    r"|low|active|detected|left\ on|still\ on|ready|up|down"
)
# The states a "which ... are ..." question lists; "cooling" or "hot" would catch advice.
_LISTED_STATES = (
    r"on|off|open|closed|locked|unlocked|running|printing|online|offline|unavailable|active"
    r"|playing|charging|left\ on|still\ on|switched\ on|turned\ on"
)
# Sensor readings; they are advice, not state, when a recipe follows ("... for PETG").
_READINGS = (
    r"temperature|temp|humidity|pressure|co2|air\ quality|noise\ level|power\ draw"
    r"|power\ usage|energy\ usage|consumption|battery(?:\ level)?|charge\ level|progress|eta"
)
_NOT_STATE_AFTER = r"(?!\s+(?:for|should|be|to\ use|with|when|range|setting|settings)\b)"
_LIVE_STATE_CUES = re.compile(
    rf"""
    # "is the door locked", "are all the lights off", "is anything still on", "is it on"
    \b(?:is|are|was|were|isn't|aren't)\s+
        (?:the|my|our|any|anything|anyone|someone|somebody|it|there|all|both|every|either)
        \b[^?.!]{{0,60}}?\b(?:{_STATES})\b
    # "check that the garage door is shut", "the print is done?"
  | \b(?:the|my|our)\s+(?:\w+\s+)?(?:{_DEVICES})\s+(?:is|are)\s+(?:still\s+|now\s+)?(?:{_STATES})\b
    # "did I leave the iron on", "has the print finished", "did someone open the gate"
  | \b(?:did|has|have|hasn't|haven't|didn't)\s+
        (?:the|my|our|i|we|you|someone|anyone|somebody|anybody|it)
        \b[^?.!]{{0,60}}?\b(?:finish(?:ed)?|complete(?:d)?|fail(?:ed)?|stop(?:ped)?|leave|left
        |lock(?:ed)?|close(?:d)?|open(?:ed)?|turn(?:ed)?\ (?:on|off)|switch(?:ed)?\ (?:on|off)
        |come|came|arrive(?:d)?|start(?:ed)?|run|ran|trip(?:ped)?)\b
    # "which lights are on", "how many windows are open", "any doors unlocked"
  | \b(?:which|what|any|how\ many)\s+(?:of\ the\s+)?(?:\w+\s+)?(?:{_DEVICES})\b
        [^?.!]{{0,30}}?\b(?:{_LISTED_STATES})\b
    # "what's the temperature in the garage", "the nozzle temperature?", "print progress"
  | \b(?:{_READINGS})(?:\s+(?:level|levels|reading|readings))?
        \s+(?:in|inside|outside|of|at|on)\s+(?:the|my|our)\b
  | \bwhat(?:'s|\ is|\ are)\s+the\s+(?:{_READINGS})\b{_NOT_STATE_AFTER}
  | \bhow(?:'s|\ is|\ are)\s+(?:the|my|our)\s+(?:\w+\s+)?(?:{_DEVICES})\s+
        (?:going|doing|coming\ along|getting\ on)\b
  | \b(?:current|present|live)\s+(?:{_READINGS}|state|status|reading)\b
  | \b(?:the|my|our)\s+(?:\w+\s+)?(?:{_DEVICES})(?:'s)?\s+(?:{_READINGS}|status|state)\b
        {_NOT_STATE_AFTER}
  | \bstatus\b | \bstate\s+of\s+(?:the|my|our)\b
  | \bhow\s+(?:hot|warm|cold|humid|bright|dark|loud|full|empty)\s+is\s+(?:it|the|my|our)\b
    # Progress of whatever is running.
  | \bhow\s+far\s+along\b
  | \bhow\s+(?:long|much\ longer)\s+(?:until|till|before|left|remains|remaining)\b
  | \bhow\s+much\b[^?.!]{{0,40}}\b(?:left|remaining)\b
  | \btime\s+(?:left|remaining)\b | \bpercent(?:age)?\s+(?:done|complete)\b
  | \bwhen\s+will\s+(?:the|my|our|it)\b[^?.!]{{0,40}}\b(?:finish|be\ done|be\ ready|end|complete)\b
    # Presence, and what happened lately.
  | \b(?:anyone|anybody|someone|somebody|who(?:'s|\ is))\s+(?:at\ )?
        (?:home|here|in\ the|outside|at\ the)\b
  | \bwhere\s+is\s+(?:everyone|everybody)\b
  | \blast\s+(?:opened|closed|locked|unlocked|triggered|seen|ran|run|motion|activity)\b
  | \bwhen\s+(?:did|was|were)\b[^?.!]{{0,40}}\blast\b
  | \b(?:any|is\ there|was\ there)\s+motion\b | \bmotion\s+(?:in|at|on|detected)\b
  | \bwhat(?:'s|\ is)\s+(?:playing|on\ (?:tv|the\ tv)|running)\b
  | \bleft\s+(?:on|open|running|unlocked)\b
  | \b(?:right\ now|at\ the\ moment|currently)\b
  | \bhow\s+much\s+(?:power|energy|electricity|water|gas)\b[^?.!]{{0,40}}
        \b(?:using|drawing|consuming|used\ today)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)

# What changes in HA's system prompt from one turn to the next: the date and time.
_VOLATILE = re.compile(
    r"""
    \d
  | \b(?:mon|tues|wednes|thurs|fri|satur|sun)day\b
  | \b(?:january|february|march|april|may|june|july|august|september|october|november|december)\b
  | \b(?:jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)\b
  | \b(?:[ap]\.?m\.?|utc|gmt)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Which cache tiers one conversation may use, and why the others are off."""

    exact: bool
    semantic: bool
    # Why a tier is off: "tool turn", "image", "no question", "live state",
    # "fresh facts: <cue>" or "follow-up".
    reason: str | None = None


def freshness_cue(text: str) -> str | None:
    """Return the words that make `text` ask about fresh facts, or None.

    News, prices, releases and versions, the weather, scores, and dates from now
    on ("today", "this week", a year from 2025): answers that go stale.
    """
    if match := _FRESHNESS_CUES.search(text):
        # Long patterns capture their cue word; the others are the cue themselves.
        return _SPACES.sub(" ", match.group(match.lastindex or 0).lower())
    for year in _YEAR.findall(text):
        if int(year) >= FIRST_FRESH_YEAR:
            return str(year)
    return None


def is_live_state(text: str) -> bool:
    """Return whether `text` asks about the current state of the home or the shop.

    Doors, locks, lights, sensors, presence, what a machine is doing and how far
    along a print is: answers only Home Assistant has, right now.
    """
    return _LIVE_STATE_CUES.search(text) is not None


def context_fingerprint(messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
    """Return a short hash of what shapes an answer besides the question itself.

    That is the system prompt, without its digits, day and month names (Home
    Assistant's prompt carries the current date and time), and the tools offered.
    """
    system = " ".join(
        message_text(message) for message in messages if message.get("role") == "system"
    )
    stable = _SPACES.sub(" ", _VOLATILE.sub("", system)).strip()
    tool_names = sorted(_tool_names(tools or ()))
    payload = json.dumps({"system": stable, "tools": tool_names}, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_policy(messages: list[Message]) -> CachePolicy:
    """Return which cache tiers may answer, or learn from, this conversation.

    Nothing is cached for tool turns, images, live-state questions or fresh facts;
    the semantic tier only serves a lone user question, since a follow-up's meaning
    depends on the turns before it.
    """
    if reason := _never_cached(messages):
        return CachePolicy(exact=False, semantic=False, reason=reason)
    if sum(message.get("role") == "user" for message in messages) > 1:
        return CachePolicy(exact=True, semantic=False, reason="follow-up")
    return CachePolicy(exact=True, semantic=True)


def _never_cached(messages: list[Message]) -> str | None:
    """Return why no cache tier may see this conversation, or None."""
    if any(
        message.get("role") == "tool"
        or (message.get("role") == "assistant" and message.get("tool_calls"))
        for message in messages
    ):
        return "tool turn"
    # The cache compares text: the same question about another picture is another turn.
    if any(_has_image(message) for message in messages):
        return "image"
    user_texts = [message_text(message) for message in messages if message.get("role") == "user"]
    if not user_texts:
        return "no question"
    # Every user turn counts: "and the garage?" after "is the door locked?" asks
    # about state too, and a repeat of the whole exchange must not be served.
    if any(is_live_state(text) for text in user_texts):
        return "live state"
    for text in reversed(user_texts):
        if cue := freshness_cue(text):
            return f"fresh facts: {cue}"
    return None


def message_text(message: Message) -> str:
    """Return the text of a message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _has_image(message: Message) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") in {"image_url", "input_image", "image"}
        for part in content
    )


def _tool_names(tools: Iterable[dict[str, Any]]) -> Iterable[str]:
    for tool in tools:
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else tool.get("name")
        if isinstance(name, str):
            yield name
