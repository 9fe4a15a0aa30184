"""Which questions the router may answer from its cache, and which must reach a model."""

import pytest

from kittyai.router.classify import (
    CachePolicy,
    cache_policy,
    context_fingerprint,
    freshness_cue,
    is_live_state,
)

# Questions only Home Assistant can answer, right now: never from a cache.
LIVE_STATE = [
    "Is the door locked?",
    "is the front door locked",
    "Kitty, is the garage door open?",
    "Are the workshop lights on?",
    "Are the lights in the workshop still on?",
    "Which lights are on?",
    "How many lights are on?",
    "Any lights still on in the shop?",
    "are any windows open",
    "Are all the doors locked?",
    "Is the freezer door open?",
    "Are the blinds down?",
    "Is the mailbox open?",
    "Is it on?",
    "Is anything on in the garage?",
    "What's the temperature in the garage?",
    "What is the temperature?",
    "what's the humidity?",
    "What's the humidity in the filament cabinet?",
    "What's the CO2 level in the office?",
    "Current humidity in the basement?",
    "What is the current nozzle temperature?",
    "What's the nozzle temperature?",
    "how hot is the nozzle",
    "How warm is it in the workshop?",
    "Is the kiln hot?",
    "Is the bed heated yet?",
    "How far along is the print?",
    "how is the print going",
    "How long until the print is done?",
    "How much time is left on the print?",
    "When will the print finish?",
    "What percentage done is the print?",
    "Has the print finished yet?",
    "Did the print fail?",
    "Is the 3D printer printing?",
    "Status of the printer",
    "What's the printer status?",
    "what's the state of the CNC",
    "is the cnc idle",
    "is my printer online",
    "Is the laser cutter still running?",
    "Is the compressor running?",
    "Is the dust collector on?",
    "Is the fan running in the paint booth?",
    "Did I leave the soldering iron on?",
    "Is the alarm armed?",
    "Is anyone home?",
    "Who is home right now?",
    "Is someone at the front door?",
    "Did someone open the back gate?",
    "When was the garage door last opened?",
    "Was there any motion in the driveway?",
    "What's playing in the living room?",
    "is the washing machine done",
    "Is the car charging?",
    "is the heat on in the shop",
    "Check if the garage door is closed.",
    "Tell me whether the back door is unlocked.",
    "the garage door is open?",
    "How much filament is left on the spool?",
    "What's the battery level of the smoke detector?",
    "what's the power draw of the compressor right now",
    "How much power is the shop using?",
]

# Ordinary workshop questions: their answers keep, so they may be cached.
GENERAL = [
    "How do I level the bed?",
    "What's a good infill for PETG?",
    "how do I dry PETG filament?",
    "What bed temperature should I use for PETG?",
    "What nozzle temperature for PLA?",
    "What should the bed temperature be for ABS?",
    "What's the best layer height for miniatures?",
    "How do I tune retraction on a direct drive extruder?",
    "Why is my first layer not sticking?",
    "What feed rate should I use for a 6 mm end mill in aluminium?",
    "How do I sharpen a chisel?",
    "What's the difference between PLA and PETG?",
    "How do I calibrate e-steps?",
    "Explain how a stepper motor driver works.",
    "What current does a NEMA 17 stepper need?",
    "How do I set the stepper motor current on a TMC2209?",
    "What's a good fan speed for PLA?",
    "What fan should I use for cooling the hotend?",
    "How do I wire a relay to an ESP32?",
    "What wood finish is food safe?",
    "How many perimeters for a strong part?",
    "How do I score and snap acrylic?",
    "How do I apply mold release to a silicone mold?",
    "What's the melting point of PETG?",
    "How do I write a Home Assistant automation that turns on the lights at sunset?",
    "What is a PID tune and how do I run one?",
    "Convert 3/8 inch to millimetres.",
    "What size drill for an M6 tap?",
    "Why does my laser cutter leave burn marks on plywood?",
    "How do I clean a clogged nozzle?",
    "What is the ideal humidity for storing filament?",
    "How do I reduce stringing with PETG?",
    "Is PETG food safe?",
    "How do I get filament to come out of a clogged nozzle?",
    "Which lamp is best for a workbench?",
    "How do I launch OctoPrint on boot?",
    "Recommend a glue for bonding PLA to plywood",
]

# Questions about facts that go stale, with the cue that gives them away.
FRESH = [
    ("What's the latest Klipper version?", "latest"),
    ("Any news about Prusa?", "news"),
    ("How much does a Bambu Lab X1C cost?", "cost"),
    ("What's the price of PETG filament?", "price"),
    ("What is the current version of Home Assistant?", "current version"),
    ("When was PrusaSlicer 2.9 released?", "released"),
    ("What's new in OrcaSlicer 2.3?", "what's new in"),
    ("What's the weather forecast for tomorrow?", "weather"),
    ("Will it rain this weekend?", "will it rain"),
    ("What are today's top headlines?", "today's"),
    ("What happened this week in 3D printing?", "this week"),
    ("Who won the game last night?", "who won"),
    ("What's the score of the match?", "score of the"),
    ("Is there a firmware update for my Ender 3?", "firmware update"),
    ("What firmware version is current for the Bambu A1?", "firmware version"),
    ("What's the newest Raspberry Pi?", "newest"),
    ("Any recent recalls on lithium batteries?", "recent"),
    ("What are the best printers of 2026?", "2026"),
    ("Which slicer got the most updates in 2025", "2025"),
    ("Is the Prusa Core One in stock?", "in stock"),
    ("What's the exchange rate from EUR to USD?", "exchange rate"),
    ("When does the next Raspberry Pi come out?", "come out"),
    ("Are there updates available for ESPHome?", "updates available"),
]

# Years before 2025 are history, not news.
HISTORY = [
    "Which RepRap printer was built in 2005?",
    "How did 3D printing change after the 2009 FDM patent expired?",
    "What happened to MakerBot in 2013?",
]

SYSTEM = (
    "You are a voice assistant for Home Assistant.\n"
    "Answer questions about the world truthfully.\n"
    "Current time is {time}. Today's date is {date}."
)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def system(time: str = "14:05:09", date: str = "2026-11-22") -> dict:
    return {"role": "system", "content": SYSTEM.format(time=time, date=date)}


def tool(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


@pytest.mark.parametrize("question", LIVE_STATE)
def test_live_state_questions_are_recognised(question: str) -> None:
    assert is_live_state(question)


@pytest.mark.parametrize("question", GENERAL)
def test_general_questions_are_not_live_state(question: str) -> None:
    assert not is_live_state(question)


@pytest.mark.parametrize("question", GENERAL)
def test_general_questions_are_not_fresh(question: str) -> None:
    assert freshness_cue(question) is None


@pytest.mark.parametrize(("question", "cue"), FRESH)
def test_fresh_questions_name_their_cue(question: str, cue: str) -> None:
    assert freshness_cue(question) == cue


@pytest.mark.parametrize("question", HISTORY)
def test_past_years_are_not_fresh(question: str) -> None:
    assert freshness_cue(question) is None


@pytest.mark.parametrize("question", GENERAL)
def test_general_single_question_may_use_both_tiers(question: str) -> None:
    assert cache_policy([system(), user(question)]) == CachePolicy(exact=True, semantic=True)


@pytest.mark.parametrize("question", LIVE_STATE)
def test_live_state_is_never_cached(question: str) -> None:
    assert cache_policy([system(), user(question)]) == CachePolicy(
        exact=False, semantic=False, reason="live state"
    )


@pytest.mark.parametrize(("question", "cue"), FRESH)
def test_fresh_facts_are_never_cached(question: str, cue: str) -> None:
    policy = cache_policy([user(question)])
    assert (policy.exact, policy.semantic) == (False, False)
    assert policy.reason is not None
    assert policy.reason.startswith(("fresh facts", "live state"))


def test_follow_up_of_a_state_question_is_not_cached() -> None:
    # "and the garage?" reads like nothing, but asks about state like the turn before.
    messages = [
        user("Is the front door locked?"),
        {"role": "assistant", "content": "Yes, the front door is locked."},
        user("and the garage?"),
    ]
    assert cache_policy(messages).reason == "live state"


def test_follow_up_of_a_fresh_question_is_not_cached() -> None:
    messages = [
        user("What's the latest Klipper release?"),
        {"role": "assistant", "content": "Klipper v0.13.0."},
        user("How do I install it?"),
    ]
    assert cache_policy(messages) == CachePolicy(
        exact=False, semantic=False, reason="fresh facts: latest"
    )


def test_follow_ups_only_repeat_exactly() -> None:
    messages = [
        system(),
        user("How do I dry PETG?"),
        {"role": "assistant", "content": "65 °C for 4 hours in a dryer."},
        user("And nylon?"),
    ]
    assert cache_policy(messages) == CachePolicy(exact=True, semantic=False, reason="follow-up")


@pytest.mark.parametrize(
    "messages",
    [
        [
            user("Turn on the workshop lights and tell me a joke about routers"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "HassTurnOn", "arguments": '{"area":"workshop"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"success": true}'},
        ],
        [user("What is a good infill?"), {"role": "tool", "content": "{}"}],
    ],
    ids=["tool call and result", "tool result"],
)
def test_tool_turns_are_never_cached(messages: list[dict]) -> None:
    assert cache_policy(messages) == CachePolicy(exact=False, semantic=False, reason="tool turn")


def test_a_question_about_a_picture_is_never_cached() -> None:
    """The same words about the next camera snapshot ask about another picture."""
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "How to dry PETG?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
            ],
        }
    ]
    assert cache_policy(messages) == CachePolicy(exact=False, semantic=False, reason="image")


def test_a_conversation_without_a_question_is_not_cached() -> None:
    assert cache_policy([system()]) == CachePolicy(
        exact=False, semantic=False, reason="no question"
    )


def test_content_parts_are_read() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "Is the door locked?"}]}]
    assert cache_policy(messages).reason == "live state"


def test_fingerprint_ignores_the_clock_in_the_system_prompt() -> None:
    tools = [tool("HassTurnOn"), tool("GetLiveContext")]
    morning = context_fingerprint([system("08:01:00", "2026-11-22"), user("hi")], tools)
    evening = context_fingerprint([system("21:45:31", "2026-12-03"), user("hello")], tools)
    assert morning == evening
    assert len(morning) == 16


def test_fingerprint_ignores_weekday_and_month_names() -> None:
    def prompt(day: str) -> list[dict]:
        return [{"role": "system", "content": f"You help in the workshop. Today is {day}."}]

    monday = context_fingerprint(prompt("Monday, 3 March"), None)
    assert monday == context_fingerprint(prompt("Friday, 7 November"), None)


def test_fingerprint_ignores_the_order_of_tools() -> None:
    first = context_fingerprint([system()], [tool("HassTurnOn"), tool("GetLiveContext")])
    second = context_fingerprint([system()], [tool("GetLiveContext"), tool("HassTurnOn")])
    assert first == second


@pytest.mark.parametrize(
    ("messages", "tools"),
    [
        ([{"role": "system", "content": "You are a pirate. Answer like one."}], None),
        ([system()], [tool("HassTurnOn")]),
        ([system()], [tool("HassTurnOn"), tool("HassTurnOff")]),
        ([], None),
    ],
    ids=["other prompt", "one tool", "two tools", "no prompt"],
)
def test_fingerprint_changes_with_what_shapes_the_answer(messages: list[dict], tools) -> None:
    assert context_fingerprint(messages, tools) != context_fingerprint([system()], None)
