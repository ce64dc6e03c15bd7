"""ProceduralMemoryBlock: recall within a token budget, truncation, and learning from flushed turns."""

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.memory import Memory
from llamaindex_helpers import BOOKING, tool_turn

from llamaindex_procmem import ProceduralMemoryBlock

DEPLOY = ["git pull", "make build", "make test", "make deploy"]


@pytest.fixture
def stored(pm):
    pm.store_procedure("deploy", DEPLOY, name="deploy web app", description="Deploy the web application to production")
    pm.store_procedure("rollback", ["git revert HEAD", "make deploy"], description="Roll back a bad release")
    pm.store_procedure("onboard", ["create account", "send welcome email"], description="Onboard a new employee")
    return pm


def sessions(pm):
    return list(pm.store.iter_sessions(namespace=pm.namespace))


# ---------------------------------------------------------------- base-class contract
def test_block_fits_the_memory_block_contract(pm):
    block = ProceduralMemoryBlock(memory=pm)
    assert block.name == "procedural_memory"
    assert block.priority == 1  # truncatable, but kept over priority-2+ blocks
    assert block.accept_short_term_memory is True
    Memory.from_defaults(memory_blocks=[block])  # validates as a memory block


async def test_block_ignores_flushes_when_short_term_memory_is_refused(pm):
    block = ProceduralMemoryBlock(memory=pm, accept_short_term_memory=False)
    await block.aput(tool_turn("Book a flight", BOOKING), from_short_term_memory=True)
    assert sessions(pm) == []


# ---------------------------------------------------------------- recall
async def test_aget_renders_procedures_for_the_latest_user_message(stored):
    block = ProceduralMemoryBlock(memory=stored, k=1, top_k_predictions=0)
    messages = [
        ChatMessage(role="user", content="onboard a new employee"),
        ChatMessage(role="assistant", content="done"),
        ChatMessage(role="user", content="deploy the web application"),
    ]
    text = await block.aget(messages, session_id="s")
    assert text.startswith("Procedures that worked before for similar requests:")
    assert "id=deploy" in text
    assert stored.get("deploy", touch=False).render() in text
    assert "onboard" not in text.lower()


async def test_aget_is_empty_without_a_user_message(stored):
    block = ProceduralMemoryBlock(memory=stored)
    assert await block.aget([]) == ""
    assert await block.aget(None) == ""
    assert await block.aget([ChatMessage(role="system", content="be nice")]) == ""


async def test_aget_filters_by_kind(stored):
    stored.record_skill("deploy-skill", "Deploy with care: run tests first", triggers=["deploy the web app"])
    block = ProceduralMemoryBlock(memory=stored, kinds=["skill"], top_k_predictions=0)
    text = await block.aget([ChatMessage(role="user", content="deploy the web app")])
    assert "(skill, v1)" in text
    assert "(workflow," not in text


async def test_aget_predicts_the_next_tool_call_from_the_current_turn(pm):
    block = ProceduralMemoryBlock(memory=pm, k=1)
    for i, city in enumerate(["JFK", "BOS", "SEA"]):
        calls = [(n, dict(kw, destination=city) if n == "search_flights" else kw) for n, kw in BOOKING]
        await block.alearn(tool_turn(f"Book a flight from SFO to {city}", calls, prefix=f"r{i}"))
    current = tool_turn("Book a flight from SFO to ORD", BOOKING[:1], prefix="now")[:-1]
    text = await block.aget(current)
    assert "Likely next tool calls:" in text
    predicted = text.split("Likely next tool calls:\n", 1)[1].splitlines()
    assert predicted[0].startswith("- book_flight(")
    assert "(confidence " in predicted[0]


async def test_min_confidence_drops_weak_predictions(pm):
    block = ProceduralMemoryBlock(memory=pm, min_confidence=1.0)
    await block.alearn(tool_turn("Book a flight", BOOKING))
    text = await block.aget(tool_turn("Book a flight", BOOKING[:1], prefix="n")[:-1])
    assert "Likely next tool calls" not in text


# ---------------------------------------------------------------- token budget and truncation
async def test_max_tokens_drops_lowest_ranked_items_first(stored):
    await ProceduralMemoryBlock(memory=stored).alearn(tool_turn("deploy the web application", BOOKING))
    full_block = ProceduralMemoryBlock(memory=stored, k=3)
    msgs = [ChatMessage(role="user", content="deploy the web application")]
    full = await full_block.aget(msgs)
    assert "Likely next tool calls" in full
    first_item = full.split("\n\n[2]")[0]
    budget = len(full_block.tokenizer_fn(first_item))
    block = ProceduralMemoryBlock(memory=stored, k=3, max_tokens=budget)
    text = await block.aget(msgs)
    assert len(block.tokenizer_fn(text)) <= budget
    assert "[1] " in text and "[2] " not in text
    assert "Likely next tool calls" not in text  # predictions go before procedures
    tiny = ProceduralMemoryBlock(memory=stored, max_tokens=1)
    assert await tiny.aget(msgs) == ""


async def test_atruncate_drops_predictions_then_procedures(stored):
    await ProceduralMemoryBlock(memory=stored).alearn(tool_turn("deploy the web application", BOOKING))
    block = ProceduralMemoryBlock(memory=stored, k=3)
    text = await block.aget([ChatMessage(role="user", content="deploy the web application")])
    assert "[3] " in text and "Likely next tool calls" in text
    tokens = len(block.tokenizer_fn(text))

    shorter = await block.atruncate(text, 1)
    assert shorter is not None and len(block.tokenizer_fn(shorter)) < tokens
    assert "[3] " in shorter  # one prediction less is enough

    without_predictions = await block.atruncate(text, tokens - len(block.tokenizer_fn(text.split("\n\nLikely")[0])))
    assert "Likely next tool calls" not in without_predictions
    assert "[3] " in without_predictions

    one = await block.atruncate(text, tokens - len(block.tokenizer_fn(text.split("\n\n[2]")[0])))
    assert "[1] " in one and "[2] " not in one

    assert await block.atruncate(text, tokens) is None
    assert await block.atruncate(text, 0) == text


async def test_atruncate_cuts_foreign_text_by_lines(pm):
    block = ProceduralMemoryBlock(memory=pm)
    text = "line one\nline two\nline three"
    cut = await block.atruncate(text, 3)
    assert cut is not None and text.startswith(cut) and len(cut) < len(text)
    assert await block.atruncate("", 5) is None


async def test_memory_truncates_the_block_when_over_its_token_limit(stored):
    block = ProceduralMemoryBlock(memory=stored, k=3, top_k_predictions=0)
    question = "deploy the web application"
    full = await block.aget([ChatMessage(role="user", content=question)])
    limit = len(block.tokenizer_fn(full.split("\n\n[2]")[0])) + 60
    memory = Memory.from_defaults(session_id="t", token_limit=limit, memory_blocks=[block])
    await memory.aput(ChatMessage(role="user", content=question))
    system = (await memory.aget())[0]
    assert system.role == "system"
    assert "[1] id=deploy" in system.content
    assert "[3] " not in system.content


# ---------------------------------------------------------------- learning
async def test_flushed_turn_is_learned_as_a_session(pm):
    block = ProceduralMemoryBlock(memory=pm)
    await block.aput(tool_turn("Book a flight from SFO to JFK", BOOKING), from_short_term_memory=True, session_id="s1")
    (session,) = sessions(pm)
    assert session.task == "Book a flight from SFO to JFK"
    assert session.outcome == "success"
    assert session.actions == [
        "search_flights(origin='SFO', destination='JFK')",
        "book_flight(flight='UA1')",
        "send_confirmation(email='alice@example.com')",
    ]


async def test_a_learned_turn_becomes_a_workflow(pm):
    block = ProceduralMemoryBlock(memory=pm)
    await block.alearn(tool_turn("Book a flight from SFO to JFK", BOOKING))
    (workflow,) = pm.list(kind="workflow", tags=["learned"])
    assert "search_flights" in workflow.render()
    assert "send_confirmation" in workflow.render()


async def test_error_result_means_failure_and_judge_overrides(pm):
    block = ProceduralMemoryBlock(memory=pm)
    await block.alearn(tool_turn("Book a flight", BOOKING, errors={1}, prefix="f"))
    assert [s.outcome for s in sessions(pm)] == ["failure"]
    assert pm.list(kind="workflow", tags=["learned"]) == []

    judged = ProceduralMemoryBlock(memory=pm, judge=lambda t: t.tool_calls[-1].result == "send_confirmation ok")
    await judged.alearn(tool_turn("Book a flight", BOOKING, errors={1}, prefix="g"))
    assert sorted(s.outcome for s in sessions(pm)) == ["failure", "success"]


async def test_async_judge_and_unknown_outcome(pm):
    seen = []

    async def judge(trajectory):
        seen.append(trajectory.task)
        return None

    block = ProceduralMemoryBlock(memory=pm, judge=judge)
    await block.alearn(tool_turn("Book a flight", BOOKING))
    assert seen == ["Book a flight"]
    assert [s.outcome for s in sessions(pm)] == [None]


async def test_action_format_name_and_explicit_task_and_outcome(pm):
    block = ProceduralMemoryBlock(memory=pm, action_format="name")
    (record,) = await block.alearn(tool_turn("x", BOOKING), task="book travel", outcome="failure")
    assert record.actions == ["search_flights", "book_flight", "send_confirmation"]
    assert record.task == "book travel"
    assert record.outcome == "failure"


async def test_learning_the_same_turn_twice_stores_it_once(pm):
    block = ProceduralMemoryBlock(memory=pm)
    turn = tool_turn("Book a flight", BOOKING)
    first = await block.alearn(turn)
    again = block_records = await block.alearn(turn)
    assert [r.session_id for r in first] == [r.session_id for r in block_records] == [r.session_id for r in again]
    assert len(sessions(pm)) == 1
    await block.alearn(tool_turn("Book a flight", BOOKING, prefix="other-ids"))
    assert len(sessions(pm)) == 2


async def test_turns_without_tool_calls_and_learning_off_learn_nothing(pm):
    chat = [ChatMessage(role="user", content="hi"), ChatMessage(role="assistant", content="hello")]
    assert await ProceduralMemoryBlock(memory=pm).alearn(chat) == []
    await ProceduralMemoryBlock(memory=pm, learning=False).aput(tool_turn("Book", BOOKING))
    assert sessions(pm) == []


def test_sync_learn(pm):
    block = ProceduralMemoryBlock(memory=pm)
    records = block.learn(tool_turn("Book a flight", BOOKING))
    assert len(records) == 1
    assert len(sessions(pm)) == 1


async def test_memory_flushes_old_turns_into_the_block(pm):
    block = ProceduralMemoryBlock(memory=pm)
    memory = Memory.from_defaults(
        session_id="chat", token_limit=2000, chat_history_token_ratio=0.02, memory_blocks=[block]
    )
    await memory.aput_messages(tool_turn("Book a flight from SFO to JFK", BOOKING))
    assert sessions(pm) == []  # Memory keeps the latest complete turn
    await memory.aput(ChatMessage(role="user", content="Book a flight from LAX to BOS"))
    (session,) = sessions(pm)
    assert session.task == "Book a flight from SFO to JFK"
    system = (await memory.aget())[0]
    assert "search_flights" in system.content  # the learned workflow is recalled for the new request
