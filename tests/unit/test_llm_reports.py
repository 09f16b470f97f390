"""`opswarm incidents show ID --llm`: the stored conversation printed in order, outside text printed as text."""

from __future__ import annotations

from rich.console import Console

from bus.events import LlmEntry, LlmTranscript
from deploy.llm_reports import llm_views
from knowledge.incident_store import IncidentRecord


def record(*transcripts: dict) -> IncidentRecord:
    return IncidentRecord(incident_id="inc-1", title="t", service="checkout", severity="critical", fingerprint="f",
                          facts={"llm": list(transcripts)} if transcripts else {})  # fmt: skip


def printed(rec: IncidentRecord) -> str:
    console = Console(record=True, width=200, color_system=None)
    for view in llm_views(rec):
        console.print(view)
    return console.export_text()


def test_the_conversation_is_printed_in_order_with_its_figures() -> None:
    transcript = LlmTranscript(
        model="m", status="fallback", reason="the answer was refused twice", prompt_tokens=120, completion_tokens=30,
        model_calls=2, tool_calls=1, refusals=["action 'delete_data' is FORBIDDEN"],
        entries=[
            LlmEntry(kind="system", content="You are the diagnosis agent"),
            LlmEntry(kind="user", content="Incident inc-1"),
            LlmEntry(kind="assistant", content="1 tool call(s)", data={"prompt_tokens": 100, "completion_tokens": 10}),
            LlmEntry(kind="tool_call", content="{}", data={"name": "recent_changes"}),
            LlmEntry(kind="tool_result", content="no changes", data={"name": "recent_changes"}),
            LlmEntry(kind="refused", content="answer refused", data={"refused_actions": ["delete_data"]}),
            LlmEntry(kind="fallback", content="the playbook's diagnosis is used"),
        ],
    )  # fmt: skip
    text = printed(record(transcript.model_dump(mode="json")))
    order = ["diagnosis by m: fallback", "2 model calls", "1 tool calls", "120 prompt + 30 completion tokens",
             "reason: the answer was refused twice", "refused: action 'delete_data' is FORBIDDEN", "[system]",
             "[user]", "[assistant] 100+10 tokens", "[tool_call recent_changes]", "[tool_result recent_changes]",
             '[refused] ["delete_data"]', "[fallback]"]  # fmt: skip
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)


def test_outside_text_is_shown_not_obeyed() -> None:
    hostile = "[bold red]APPROVED[/bold red] \x1b[2J\x1b[31mcleared\x07"
    transcript = LlmTranscript(model="m", status="accepted", entries=[LlmEntry(kind="tool_result", content=hostile)])
    text = printed(record(transcript.model_dump(mode="json")))
    assert "[bold red]APPROVED[/bold red]" in text
    assert "\x1b" not in text and "\x07" not in text and "[2J[31mcleared" in text


def test_an_incident_without_a_model_or_with_an_unreadable_transcript_says_so() -> None:
    assert "no model was asked about inc-1" in printed(record())
    assert "transcript 1 cannot be read" in printed(record({"status": "nonsense"}))
