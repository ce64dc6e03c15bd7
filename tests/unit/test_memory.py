"""ProceduralMemory: the seeds' procedure APIs in one facade."""

import asyncio
import json
from datetime import timedelta

import pytest

from procmem import (
    MiningConfig,
    Persona,
    ProceduralMemory,
    Procedure,
    ProcedureNotFoundError,
    Toolbox,
    ValidationError,
    VersionNotFoundError,
    Workflow,
)
from procmem.errors import (
    ConfigurationError,
    EmbeddingError,
    ImportFormatError,
    InvalidProcedureError,
    InvalidSessionError,
    ProcMemError,
    StorageError,
    ToolNotFoundError,
)
from procmem.types import utcnow


@pytest.fixture
def memory(tmp_path, embedder):
    m = ProceduralMemory(path=tmp_path / "m.sqlite3", embedder=embedder)
    yield m
    m.close()


# ------------------------------------------------------------------ seed 002 (TAAT)


def test_store_retrieve_list_by_category(memory):
    pid = memory.store_procedure(
        "post_tweet", ["compose", "post"], parameters={"account": "main"}, metadata={"category": "twitter"}
    )
    memory.store_procedure("place_order", ["validate", "submit"], metadata={"category": "trading"})
    assert pid == "post_tweet"
    got = memory.retrieve_procedure("post_tweet")
    assert [s.action for s in got.steps] == ["compose", "post"] and got.parameters == {"account": "main"}
    assert [p.id for p in memory.list_procedures(category="trading")] == ["place_order"]
    assert len(memory.list_procedures()) == 2


def test_store_procedure_update_keeps_unspecified_fields_and_versions(memory):
    memory.store_procedure("p", ["a"], parameters={"x": 1}, metadata={"category": "c"})
    memory.store_procedure("p", ["a", "b"])
    got = memory.retrieve_procedure("p")
    assert got.parameters == {"x": 1} and got.metadata == {"category": "c"} and got.version == 2


def test_store_procedure_never_overwrites_another_namespaces_procedure(memory):
    # Two agents share one store; ids are unique in it, so the second "deploy" must not
    # become a new version of the first agent's procedure.
    memory.store_procedure("deploy", ["git pull", "make deploy"])
    other = ProceduralMemory(store=memory.store, embedder=memory.embedder, namespace="agent-b")
    with pytest.raises(InvalidProcedureError, match="agent-b") as exc:
        other.store_procedure("deploy", ["rm -rf build"])
    assert exc.value.field == "procedure_id"
    kept = memory.retrieve_procedure("deploy")
    assert kept.version == 1 and [s.action for s in kept.steps] == ["git pull", "make deploy"]


def test_two_namespaces_learning_the_same_workflow_keep_their_own(memory):
    # Mined workflow ids were "wf-<key>" in every namespace: the second agent to learn a
    # routine the first had learned got InvalidProcedureError from every learn_session.
    other = ProceduralMemory(store=memory.store, embedder=memory.embedder, namespace="agent-b",
                             mining=MiningConfig(min_support=2))
    memory.mining = MiningConfig(min_support=2)
    steps = ["git add .", "git commit -m wip", "git push"]
    for m in (memory, other, memory, other):
        m.learn_session(steps, "success")
    (mine,) = memory.list(kind="workflow", tags=["learned"])
    (theirs,) = other.list(kind="workflow", tags=["learned"])
    assert mine.id != theirs.id and theirs.id.startswith("wf-agent-b-")
    assert mine.metadata["support"] == theirs.metadata["support"] == 2
    other.learn_session(steps, "success")  # found again by its steps: updated, not duplicated
    (theirs,) = other.list(kind="workflow", tags=["learned"])
    assert theirs.metadata["support"] == 3 and memory.get(mine.id, touch=False).metadata["support"] == 2


def test_usages_never_point_at_another_namespaces_procedure(memory):
    # Namespace B's requests would train the ranking of A's procedure, which B never retrieves.
    memory.store_procedure("deploy", ["git pull", "make deploy"], description="deploy the app")
    other = ProceduralMemory(store=memory.store, embedder=memory.embedder, namespace="agent-b")
    with pytest.raises(ProcedureNotFoundError, match="agent-b"):
        other.record_usage("ship it", "deploy")
    with pytest.raises(ProcedureNotFoundError, match="agent-b"):
        other.record_skill_usage("deploy", situation="ship it")
    assert memory.store.count_usages() == 0
    memory.record_usage("ship it", "deploy")
    assert memory.store.count_usages(namespace="default") == 1


def test_procedure_id_for_is_a_slug_of_the_name(memory):
    # The agent tools' save-by-name policy: one id per name and namespace, readable, store-wide unique.
    pid = memory.procedure_id_for
    assert pid("Deploy the web app!") == pid("deploy_the  WEB app") == "deploy-the-web-app"
    assert pid("Ｄｅｐｌｏｙ the web app") == "deploy-the-web-app"  # full-width letters (NFKC)
    assert pid("Déployer l'app") == "déployer-l-app"
    assert pid("部署应用") != pid("回滚部署")  # names in other scripts are not all one id
    long_a, long_b = "step " * 150 + "alpha", "step " * 150 + "beta"  # 750 characters, same beginning
    assert len(pid(long_a)) <= 64 and pid(long_a).startswith("step-step-") and pid(long_a) != pid(long_b)
    assert pid(long_a) == pid(long_a.upper())
    # An emoji's presentation selector or a combining mark with no letter before it is no word.
    assert pid("✔\ufe0f Deploy") == pid("deploy\ufe0f") == pid("\u0301deploy") == "deploy"
    assert pid("Cafe\u0301") == pid("Café") == "café" and pid("हिन्दी") == "हिन्दी"  # marks on letters stay
    for bad in ("!!!", "  -- ", 42, "n\udc80", "\u2764\ufe0f", "\u0301"):
        with pytest.raises(InvalidProcedureError) as exc:
            pid(bad)
        assert exc.value.field == "name"
    with pytest.raises(ValidationError) as exc:
        pid("deploy", namespace="")
    assert exc.value.field == "namespace"
    assert memory.store.count() == 0  # nothing written


def test_procedure_id_for_keeps_namespaces_apart_and_is_stable(memory):
    memory.store_procedure("deploy", ["git pull", "make deploy"], kind="skill")
    assert memory.procedure_id_for("Deploy!") == "deploy"  # this namespace's, whatever its kind
    other = ProceduralMemory(store=memory.store, embedder=memory.embedder, namespace="agent b")
    assert other.procedure_id_for("Deploy") == "deploy-agent-b"
    assert memory.procedure_id_for("Deploy", namespace="agent b") == "deploy-agent-b"
    other.store_procedure("deploy-agent-b", ["rm -rf build"])
    memory.delete("deploy")  # the bare slug is free again: agent b keeps its own procedure
    assert other.procedure_id_for("Deploy") == "deploy-agent-b"
    assert memory.procedure_id_for("Deploy") == "deploy"
    # The namespace-qualified id is taken by another namespace: the namespace's hash qualifies it.
    memory.store_procedure("deploy", ["git pull"])
    memory.store_procedure("deploy-ops", ["make ops"])
    assert memory.procedure_id_for("Deploy", namespace="ops").startswith("deploy-")
    assert memory.procedure_id_for("Deploy", namespace="ops") not in {"deploy", "deploy-ops"}
    third = memory.procedure_id_for("Deploy", namespace="ops")
    memory.store_procedure(third, ["x"])  # all three candidates belong to other namespaces
    with pytest.raises(InvalidProcedureError, match="another name") as exc:
        memory.procedure_id_for("Deploy", namespace="ops")
    assert exc.value.field == "name"
    assert asyncio.run(other.aprocedure_id_for("deploy")) == "deploy-agent-b"


@pytest.mark.parametrize("bad", ["n\udc80", "\ud800x"])
def test_ids_that_are_not_unicode_are_refused_by_field(memory, bad):
    # Lone surrogates cannot be stored; they raised a raw UnicodeEncodeError from sqlite3.
    for call in (lambda: memory.get(bad), lambda: memory.delete(bad),
                 lambda: memory.record_outcome(bad, True), lambda: memory.list(namespace=bad)):
        with pytest.raises(ValidationError) as exc:
            call()
        assert exc.value.field in ("procedure_id", "namespace")
    with pytest.raises(InvalidProcedureError) as exc:
        memory.store_procedure(bad, ["a"])
    assert exc.value.field == "procedure_id"
    memory.store_procedure("p", ["a"])
    with pytest.raises(ValidationError) as exc:
        memory.record_usage(bad, "p")
    assert exc.value.field == "query"
    assert [p.id for p in memory.list()] == ["p"]


def test_execute_with_parameter_passing_against_registry(memory):
    calls = []

    @memory.registry.register
    def fetch(symbol, context=None):
        calls.append(("fetch", symbol, context))
        return {"price": 101.5}

    @memory.registry.register
    def decide(price, threshold):
        calls.append(("decide", price, threshold))
        return "buy" if price > threshold else "hold"

    memory.store_procedure(
        "trade",
        [{"function": "fetch", "parameters": {"symbol": "{ticker}"}}, {"function": "decide"}],
        parameters={"ticker": "AAPL", "threshold": 100},
    )
    result = memory.execute_procedure("trade", context={"user": "u1"}, parameters={"threshold": 200})
    assert result.success and result.results == [{"price": 101.5}, "hold"]
    assert calls == [("fetch", "AAPL", {"user": "u1"}), ("decide", 101.5, 200)]
    stats = memory.retrieve_procedure("trade").stats
    assert stats.successes == 1 and stats.mean_duration >= 0 and stats.last_execution is not None


def test_execute_unregistered_function_fails_cleanly_and_counts_failure(memory):
    memory.store_procedure("bad", [{"function": "os.system", "parameters": {"command": "echo pwned"}}])
    result = memory.execute_procedure("bad")
    assert not result.success and result.failed_step == 0 and "not registered" in result.error
    assert memory.retrieve_procedure("bad").stats.failures == 1


def test_execute_step_exception_is_captured(memory):
    memory.registry.register(lambda: 1 / 0, name="explode")
    memory.store_procedure("p", [{"function": "explode"}])
    result = memory.execute_procedure("p")
    assert not result.success and "ZeroDivisionError" in result.error


def test_rollback_restores_as_new_version_and_can_be_undone(memory):
    memory.store_procedure("p", ["v1 step"])
    memory.store_procedure("p", ["v2 step"])
    rolled = memory.rollback("p", 1)
    assert rolled.version == 3 and [s.action for s in rolled.steps] == ["v1 step"]
    assert memory.versions("p")[-1].note == "rollback to v1"
    undone = memory.rollback("p", 2)
    assert [s.action for s in undone.steps] == ["v2 step"] and undone.version == 4
    with pytest.raises(VersionNotFoundError):
        memory.rollback("p", 99)
    with pytest.raises(ValidationError):
        memory.rollback("p", "1")


def test_rollback_procedure_seed_index(memory):
    memory.store_procedure("p", ["one"])
    memory.store_procedure("p", ["two"])
    memory.store_procedure("p", ["three"])
    assert [s.action for s in memory.rollback_procedure("p", 0).steps] == ["two"]
    with pytest.raises(VersionNotFoundError):
        memory.rollback_procedure("p", 10)


def test_learn_from_outcome_updates_stats_and_revises(memory):
    memory.store_procedure("p", ["a"])
    memory.learn_from_outcome("p", {"success": False, "duration": 1.5, "note": "slow"})
    rec = memory.retrieve_procedure("p")
    assert rec.stats.failures == 1 and rec.stats.mean_duration == pytest.approx(1.5)
    assert memory.store.outcomes("p")[0].details == {"note": "slow"}
    revised = memory.learn_from_outcome("p", {"success": True, "steps": ["a", "b"]})
    assert [s.action for s in revised.steps] == ["a", "b"] and revised.version == 2
    with pytest.raises(ValidationError):
        memory.learn_from_outcome("p", {"result": "ok"})


def test_learn_from_outcome_rolls_back_a_revision_that_keeps_failing(memory):
    memory.store_procedure("p", ["good"])
    memory.learn_from_outcome("p", {"success": True, "steps": ["risky"]})
    for _ in range(3):
        last = memory.learn_from_outcome("p", {"success": False})
    assert [s.action for s in last.steps] == ["good"]
    assert memory.versions("p")[-1].note.startswith("rollback")


def test_delete_and_clear_are_scoped(tmp_path, embedder):
    a = ProceduralMemory(path=tmp_path / "s.sqlite3", embedder=embedder, namespace="agent-a")
    b = ProceduralMemory(store=a.store, embedder=embedder, namespace="agent-b")
    a.store_procedure("pa", ["x"])
    b.store_procedure("pb", ["y"])
    assert a.delete_procedure("pa") is True and a.delete_procedure("pa") is False
    a.store_procedure("pa2", ["x"])
    assert a.clear() == 1
    assert [p.id for p in b.list()] == ["pb"]


def test_persistence_survives_restart(tmp_path, embedder):
    path = tmp_path / "restart.sqlite3"
    m = ProceduralMemory(path=path, embedder=embedder)
    m.store_procedure("deploy", ["build", "ship"], metadata={"category": "ops"})
    m.learn_session(["git pull", "make", "make deploy"], "success")
    m.close()
    m2 = ProceduralMemory(path=path, embedder=embedder)
    assert m2.retrieve_procedure("deploy").metadata == {"category": "ops"}
    assert m2.stats()["sessions"] == 1
    assert m2.predict_next_action(["git pull"], top_k=1)[0].action == "make"


# ------------------------------------------------------------------ seed 004


def test_record_and_find_skills_and_usage(memory):
    skill = memory.record_skill(
        "error_handling", "When API returns 429, retry with exponential backoff", ["rate limit", "429"]
    )
    memory.record_skill("greeting", "Say hello politely to new users", ["new user"])
    found = memory.find_applicable_skills("the API says 429 rate limit exceeded")
    assert found[0].procedure.id == skill.id and found[0].procedure.kind.value == "skill"
    updated = memory.record_skill_usage(skill.id, success=True, situation="got HTTP 429")
    assert updated.stats.successes == 1
    assert memory.store.count_usages() == 1
    again = memory.record_skill("error_handling", "Retry 429s with jittered exponential backoff", ["429"])
    assert again.id == skill.id and again.version == 2 and again.stats.successes == 1


def test_record_skill_rejects_bad_input(memory):
    with pytest.raises(InvalidProcedureError, match="name"):
        memory.record_skill("", "pattern")
    with pytest.raises(InvalidProcedureError, match="triggers"):
        memory.record_skill("x", "pattern", triggers="429")
    with pytest.raises(ProcedureNotFoundError):
        memory.record_skill_usage("nope", True)


# ------------------------------------------------------------------ seed 000 (MemoRizz)


def test_persona_store_retrieve_and_prompt(memory):
    persona = Persona(name="ServiceBot", role="Customer Service Representative", goals="Resolve issues")
    pid = persona.store_persona(memory)
    again = Persona.retrieve_persona(pid, memory)
    assert again.name == "ServiceBot" and again.id == pid
    prompt = again.generate_system_prompt_input()
    assert "ServiceBot" in prompt and "Resolve issues" in prompt
    assert memory.search("customer service", kinds=["persona"])[0].procedure.id == pid  # semantic matching
    memory.store_procedure("not_persona", ["x"])
    with pytest.raises(InvalidProcedureError):
        Persona.retrieve_persona("not_persona", memory)


def test_toolbox_register_schema_discover_execute(memory):
    toolbox = Toolbox(memory)

    @toolbox.register_tool
    def process_refund(order_id: str, amount: float) -> str:
        """Process a refund for a customer order.

        Args:
            order_id: The order to refund.
            amount: Amount in dollars.
        """
        if amount <= 0:
            raise ValueError("amount must be positive")
        return f"Refund of ${amount} processed for order {order_id}"

    def get_weather(city: str) -> str:
        """Get the weather forecast for a city."""
        return "sunny"

    weather = toolbox.register_tool(get_weather)
    assert weather("Paris") == "sunny" and weather.id.startswith("tool:")
    schema = process_refund.schema
    assert schema["required"] == ["order_id", "amount"]
    assert schema["properties"]["amount"]["type"] == "number"
    assert schema["properties"]["order_id"]["description"] == "The order to refund."
    assert toolbox.search_tools("refund an order", k=1)[0].procedure.name == "process_refund"
    ok = toolbox.execute_tool("process_refund", order_id="A1", amount="12.5")
    assert ok.success and ok.output == "Refund of $12.5 processed for order A1"
    bad_args = toolbox.execute_tool("process_refund", {"order_id": "A1"})
    assert not bad_args.success and "amount" in bad_args.error
    raised = toolbox.execute_tool("process_refund", order_id="A1", amount=-1)
    assert not raised.success and "positive" in raised.error
    stats = memory.get(process_refund.id).stats
    assert (stats.successes, stats.failures) == (1, 2)
    with pytest.raises(ToolNotFoundError):
        toolbox.execute_tool("nope")


def test_toolbox_reads_memorizz_style_numpy_docstring(memory):
    # Seed 000's example: "Parameters:" / "Returns:" over dashed underlines of another length.
    def get_order_status(order_id: str) -> str:
        """
        Retrieve the current status of a customer order.

        Parameters:
        -----------
        order_id : str
            The unique identifier for the customer order

        Returns:
        --------
        str
            Current status of the order
        """
        return f"Order {order_id} is currently being processed"

    tool = Toolbox(memory).register_tool(get_order_status)
    assert tool.description == "Retrieve the current status of a customer order."
    assert tool.schema["properties"]["order_id"]["description"] == "The unique identifier for the customer order"


def test_a_lone_tag_string_or_a_negative_page_is_an_error_not_an_empty_result(memory):
    memory.store_procedure("deploy", ["git pull"], tags=["ops"])
    assert [p.id for p in memory.list(tags=["ops"])] == ["deploy"]
    assert [r.procedure.id for r in memory.search("deploy", tags=["ops"])] == ["deploy"]
    with pytest.raises(ValidationError, match="tags"):
        memory.search("deploy", tags="ops")  # once filtered by the tags 'o', 'p' and 's': nothing
    with pytest.raises(ValidationError, match="tags"):
        memory.list(tags="ops")
    for bad in ({"offset": -5}, {"limit": -1}, {"limit": 2.5}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            memory.list(**bad)


def test_unknown_kind_is_an_error_not_an_empty_result(memory):
    memory.store_procedure("deploy", ["git pull", "make deploy"], description="Deploy the app")
    assert [r.procedure.id for r in memory.search("deploy", kinds=["workflow"])] == ["deploy"]
    for bad in (["workflows"], "workflow"):
        with pytest.raises(ValidationError, match="kinds"):
            memory.search("deploy", kinds=bad)
    with pytest.raises(ValidationError, match="kind"):
        memory.list(kind="workflows")


def test_workflow_create_execute_with_conditions(memory):
    log = []
    memory.registry.register(lambda: log.append("ack") or "ok", name="acknowledge")
    memory.registry.register(lambda: log.append("escalate") or "escalated", name="escalate")
    memory.registry.register(lambda: log.append("resolve") or "resolved", name="resolve")
    wf = Workflow("IssueResolution", "Resolve customer issues", memory)
    wid = wf.create_workflow(
        [
            {"step": "acknowledge", "action": "Acknowledge the concern", "function": "acknowledge"},
            {"step": "escalate", "action": "Escalate", "function": "escalate", "condition": "severe"},
            {"step": "resolve", "action": "Resolve", "function": "resolve", "condition": "not severe"},
        ]
    )
    again = Workflow.retrieve_workflow(wid, memory)
    assert [s.name for s in again.steps] == ["acknowledge", "escalate", "resolve"]
    result = again.execute({"severe": False})
    assert result.success and result.skipped == [1] and log == ["ack", "resolve"]
    text_only = Workflow("Greeting", "say hi", memory)
    text_only.create_workflow([{"step": "greet", "action": "Greet the customer"}])
    assert not text_only.execute().success
    handled = text_only.execute(handler=lambda step, state: f"did: {step.action}")
    assert handled.results == ["did: Greet the customer"]


def test_workflow_steps_call_toolbox_tools(memory):
    # Seed 000: workflows integrate with tool execution; a registered tool is a step function.
    toolbox = Toolbox(memory)

    @toolbox.register_tool
    def get_order_status(order_id: str) -> str:
        """Retrieve the current status of a customer order."""
        return "late" if order_id == "A1" else "on time"

    @toolbox.register_tool
    def process_refund(order_id: str, amount: float) -> str:
        """Process a refund for a customer order."""
        return f"refunded {amount} on {order_id}"

    memory.registry.register(lambda status: status == "late", name="is_late")
    wf = Workflow("LateOrder", "Refund late orders", memory)
    wf.create_workflow([
        {"step": "status", "action": "Check the order", "function": "get_order_status",
         "parameters": {"order_id": "{order}"}},
        {"step": "refund", "action": "Refund it", "function": "process_refund", "condition": "is_late",
         "parameters": {"order_id": "{order}", "amount": 5.0}},
    ])
    late = wf.execute({"order": "A1"})
    assert late.success and late.results == ["late", "refunded 5.0 on A1"] and late.skipped == []
    on_time = wf.execute({"order": "B2"})
    assert on_time.success and on_time.results == ["on time"] and on_time.skipped == [1]


def test_seed000_keyword_memory_provider_is_accepted(memory):
    # Seed 000 writes Workflow(name=..., description=..., memory_provider=memory_provider).
    wf = Workflow(name="CustomerIssueResolution", description="Resolve issues", memory_provider=memory)
    wid = wf.create_workflow([{"step": "acknowledge", "action": "Acknowledge the concern"}])
    assert Workflow.retrieve_workflow(wid, memory_provider=memory).name == "CustomerIssueResolution"
    assert Toolbox(memory_provider=memory).memory is memory
    persona = Persona(name="ServiceBot", role="Customer Service Representative")
    pid = persona.store_persona(memory_provider=memory)
    assert Persona.retrieve_persona(pid, memory_provider=memory).name == "ServiceBot"
    with pytest.raises(ConfigurationError, match="memory_provider"):
        Workflow("X", "y", memory, memory_provider=memory)
    with pytest.raises(ConfigurationError, match="memory="):
        Workflow("X", "y")


# ------------------------------------------------------------------ seed 003 (Coda)


def test_search_by_minimum_importance(memory):
    # Seed 003's retrieve_memories(query, min_importance=0.8): importance after decay.
    low = memory.add({"name": "deploy quickly", "description": "deploy the web app", "importance": 0.2})
    high = memory.add({"name": "deploy safely", "description": "deploy the web app", "importance": 0.9})
    assert {r.procedure.id for r in memory.search("deploy the web app")} == {low.id, high.id}
    assert [r.procedure.id for r in memory.search("deploy the web app", min_importance=0.8)] == [high.id]
    assert memory.get(low.id, touch=False).access_count == 1  # a filtered-out result is not counted
    assert memory.search("deploy the web app", min_importance=1.0) == []
    many = [memory.add({"name": f"deploy variant {i}", "description": "deploy the web app", "importance": 0.1})
            for i in range(12)]
    found = memory.search("deploy the web app", k=1, min_importance=0.8)
    assert [r.procedure.id for r in found] == [high.id] and len(many) == 12
    for bad in (1.5, -0.1, "0.5", True, float("nan")):
        with pytest.raises(ValidationError, match="min_importance"):
            memory.search("deploy", min_importance=bad)


class _FailingEmbedder:
    """Embeds until ``broken`` is set, then fails the way an unloadable model does."""

    def __init__(self, inner):
        self.inner, self.dim, self.broken = inner, inner.dim, False

    def embed_documents(self, texts):
        if self.broken:
            raise EmbeddingError("model weights not found")
        return self.inner.embed_documents(texts)

    def embed_query(self, text):
        return self.embed_documents([text])[0]


def test_keyword_search_answers_when_the_embedder_fails(tmp_path, embedder):
    # Seed 003: "except EmbeddingError: use keyword-based search" -- explicit, never silent.
    failing = _FailingEmbedder(embedder)
    m = ProceduralMemory(path=tmp_path / "k.sqlite3", embedder=failing)
    m.store_procedure("deploy", ["git pull", "make deploy"], description="Deploy the web app to production")
    m.store_procedure("backup", ["pg_dump"], description="Back up the production database", kind="skill")
    m.add({"id": "other", "name": "other", "description": "deploy the web app", "namespace": "someone-else"})
    failing.broken = True
    with pytest.raises(EmbeddingError):
        m.search("deploy the web app")
    hits = m.keyword_search("deploy the web app")
    assert [h.procedure.id for h in hits] == ["deploy"]  # this namespace only
    assert hits[0].score == hits[0].lexical == 1.0 and hits[0].dense is None and "keyword" in hits[0].reason
    assert [h.procedure.id for h in m.keyword_search("production", kinds=["skill"])] == ["backup"]
    assert m.keyword_search("kubernetes") == []
    assert m.get("deploy", touch=False).access_count == 1
    assert [h.procedure.id for h in asyncio.run(m.akeyword_search("database backup", k=1))] == ["backup"]
    with pytest.raises(ValidationError, match="query"):
        m.keyword_search("  ")
    with pytest.raises(ValidationError, match="k must"):
        m.keyword_search("deploy", k=0)
    m.close()


def test_a_deep_importance_search_embeds_the_query_at_most_twice(memory):
    memory.add_many([{"name": f"deploy the web app {i}", "description": "deploy the web app", "importance": 0.1}
                     for i in range(40)])
    high = memory.add({"name": "release", "description": "ship a release of the site", "importance": 0.9})
    calls = []
    embed = memory.embedder.embed_query
    memory.embedder.embed_query = lambda text: calls.append(text) or embed(text)
    found = memory.search("deploy the web app", k=1, min_importance=0.8)
    assert [r.procedure.id for r in found] == [high.id]
    assert len(calls) == 2  # searched at depths 1, 4, 16 and 64: the query embedded twice


def test_update_versions_and_rejects_bad_fields(memory):
    p = memory.add({"name": "deploy", "description": "old"})
    p2 = memory.update(p.id, description="new", importance=0.9)
    assert p2.version == 2 and p2.description == "new"
    with pytest.raises(InvalidProcedureError, match="importance"):
        memory.update(p.id, importance=float("nan"))
    with pytest.raises(InvalidProcedureError, match="importance"):
        memory.update(p.id, importance=1.5)
    with pytest.raises(InvalidProcedureError):
        memory.update(p.id, version=7)
    assert memory.get(p.id).version == 2  # nothing lost or changed by the rejected updates
    with pytest.raises(ProcedureNotFoundError):
        memory.update("missing", description="x")


def test_importance_decays_and_access_counts(memory):
    p = memory.add({"name": "old skill", "importance": 0.8})
    fresh = memory.current_importance(memory.get(p.id, touch=False))
    later = memory.current_importance(memory.get(p.id, touch=False), now=utcnow() + timedelta(days=30))
    assert later == pytest.approx(fresh / 2, abs=0.02)
    memory.get(p.id)
    memory.get(p.id)
    assert memory.get(p.id, touch=False).access_count == 2
    doomed = memory.forget(min_importance=0.99, dry_run=True)
    assert doomed == [p.id] and memory.get(p.id, touch=False)


def test_consolidate_merges_near_duplicates_and_reports(memory):
    a = memory.add({"name": "restart the web server", "description": "restart nginx web server", "triggers": ["502"]})
    b = memory.add({"name": "restart the web server", "description": "restart nginx web server", "triggers": ["down"]})
    c = memory.add({"name": "rotate logs", "description": "compress old log files"})
    memory.record_outcome(b.id, True)
    memory.record_usage("site is down", a.id)
    dry = memory.consolidate(threshold=0.95, dry_run=True)
    assert dry.merged and memory.store.count() == 3
    report = memory.consolidate(threshold=0.95)
    assert [(g["kept"], g["merged"]) for g in report.merged] == [(b.id, [a.id])]
    assert report.merged[0]["similarity"] >= 0.95
    kept = memory.get(b.id, touch=False)
    assert set(kept.triggers) == {"502", "down"} and kept.stats.successes == 1
    assert kept.metadata["merged_from"][0]["id"] == a.id
    assert memory.store.count() == 2 and memory.get(c.id, touch=False)
    assert memory.store.usage_search(memory.embedder.embed_query("site is down"), k=1)[0][0].procedure_id == b.id


def test_record_usages_takes_the_memorys_namespace_and_embeds_each_request_once(tmp_path):
    from procmem.embeddings import HashingEmbedder
    from procmem.types import Usage

    m = ProceduralMemory(path=tmp_path / "m.sqlite3", embedder=HashingEmbedder(dim=64), namespace="team")
    for name in ("backup", "restore", "prune"):
        m.store_procedure(name, [f"{name} it"])
    embedded: list[list[str]] = []
    embed = m.embedder.embed_documents
    m.embedder.embed_documents = lambda texts: embedded.append(list(texts)) or embed(texts)
    n = m.record_usages([("nightly backup", "backup"), ("nightly backup", "prune", False),
                         {"query": "restore yesterday", "procedure_id": "restore"}])
    assert n == 3 and embedded == [["nightly backup", "restore yesterday"]]
    assert m.store.count_usages(namespace="team") == 3
    with pytest.raises(ProcedureNotFoundError):  # a Usage keeps its own namespace
        m.record_usages([Usage(query="q", procedure_id="backup", namespace="default")])
    with pytest.raises(ValidationError, match="usage 1"):
        m.record_usages([("ok", "backup"), ("", "backup")])
    assert m.store.count_usages(namespace="team") == 3  # nothing of a refused batch is written
    assert asyncio.run(m.arecord_usages([("weekly backup", "backup")])) == 1
    found = m.search("nightly backup", k=3)
    assert found[0].procedure.id == "backup"
    m.close()


def test_stats_and_error_tree(memory):
    memory.store_procedure("p", ["a"], kind="skill")
    s = memory.stats()
    assert s["procedures"] == 1 and s["by_kind"]["skill"] == 1 and s["accesses"] == 0
    assert s["vector_index"]["procedures"] == {"loaded": False}  # stats does not load it
    memory.search("p", k=1)
    assert memory.stats()["accesses"] == 1  # a retrieval counts
    assert memory.stats()["vector_index"]["procedures"] == {"loaded": True, "vectors": 1, "hnsw": False}
    for exc in (ProcedureNotFoundError, VersionNotFoundError, ValidationError, ImportFormatError):
        assert issubclass(exc, ProcMemError)
    assert issubclass(ProcedureNotFoundError, KeyError) and issubclass(ValidationError, ValueError)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"name": ""}, "name"),
        ({"name": "x", "importance": float("inf")}, "importance"),
        ({"name": "x", "steps": "not a list"}, "steps"),
        ({"name": "x", "kind": "spell"}, "kind"),
        ({"name": 3}, "name"),
    ],
)
def test_bad_procedures_name_the_field(memory, bad, field):
    with pytest.raises(InvalidProcedureError) as info:
        memory.add(bad)
    assert field in str(info.value)
    assert memory.store.count() == 0


def test_default_namespace_must_be_valid(embedder):
    with pytest.raises(ConfigurationError):
        ProceduralMemory(path=":memory:", embedder=embedder, namespace="")


# ------------------------------------------------------------------ learning (seed 001)


def test_learn_session_mines_workflow_and_demotes_it(tmp_path, embedder):
    m = ProceduralMemory(path=tmp_path / "w.sqlite3", embedder=embedder, mining=MiningConfig(min_support=3))
    steps = ["git add .", "git commit -m wip", "git push"]
    for _ in range(3):
        m.learn_session(steps, "success")
    learned = m.list(kind="workflow", tags=["learned"])
    assert len(learned) == 1 and learned[0].metadata["status"] == "promoted"
    wid = learned[0].id
    for _ in range(4):
        m.learn_session(steps, "failure")
    demoted = m.get(wid, touch=False)
    assert demoted.metadata["status"] == "demoted"
    notes = [v.note for v in m.versions(wid)]
    assert notes[0] == "promoted" and notes[-1].startswith("demoted")


def test_workflows_mined_without_outcomes_claim_no_success_rate(tmp_path, embedder):
    m = ProceduralMemory(path=tmp_path / "w.sqlite3", embedder=embedder, mining=MiningConfig(min_support=3))
    steps = ["git add .", "git commit -m wip", "git push"]
    for _ in range(3):
        m.learn_session(steps)  # a shell history: no outcome
    (wf,) = m.list(kind="workflow", tags=["learned"])
    assert wf.metadata["status"] == "promoted"  # a routine that recurs is still promoted
    assert wf.metadata["success_rate"] is None and wf.metadata["unknown"] == 3 and wf.metadata["successes"] == 0
    assert "outcome unknown" in wf.description and "100%" not in wf.description


def test_empty_memory_does_not_predict_with_high_confidence(tmp_path, embedder):
    m = ProceduralMemory(path=tmp_path / "e.sqlite3", embedder=embedder)
    preds = m.predict_next_action(["git pull"])
    assert all(p.confidence <= 0.5 for p in preds)


def test_learn_session_validates(memory):
    with pytest.raises(InvalidSessionError):
        memory.learn_session([], "success")
    with pytest.raises(InvalidSessionError):
        memory.learn_session("git status", "success")
    with pytest.raises(InvalidSessionError, match="outcome"):
        memory.learn_session(["a"], "maybe")
    assert memory.stats()["sessions"] == 0


def test_multi_turn_session_survives_a_restart(tmp_path, embedder):
    path = tmp_path / "turns.sqlite3"
    m = ProceduralMemory(path=path, embedder=embedder)
    rec = m.learn_session(["cd docs", "cat q3.txt", "rm old.txt"], "success",
                          ["Open the report q3.txt.", "Now delete old.txt."], turns=[0, 0, 1])
    assert rec.task_at(2) == "Now delete old.txt."
    with pytest.raises(InvalidSessionError, match="turns"):
        m.learn_session(["a"], "success", "one text", turns=[0])
    with pytest.raises(InvalidSessionError):
        m.learn_session(["a", "b"], "success", ["only turn"], turns=[0, 1])
    m.close()
    again = ProceduralMemory(path=path, embedder=embedder)
    (stored,) = list(again.store.iter_sessions())
    assert (stored.instructions, stored.turns) == (rec.instructions, [0, 0, 1])
    again.close()


def test_seed001_learn_workflow_and_observe_stream(memory):
    memory.learn_workflow([{"command": "npm install"}, {"command": "npm test"}, {"command": "git commit"}], "success")
    preds = memory.predict_next_action(["npm install"], top_k=2)
    assert preds[0].action == "npm test" and 0 <= preds[0].confidence <= 1 and preds[0].reason
    memory.observe("make", session_id="s1")
    memory.observe("make test", session_id="s1")
    record = memory.end_session("s1", outcome="success")
    assert record.actions == ["make", "make test"] and memory.store.has_session("s1")


def test_seed001_python_api_as_written(memory):
    # Seed 001's own example: keyword current_context, and pred.next_command / auto_suggestions.
    for _ in range(2):
        memory.learn_workflow([{"command": "npm install"}, {"command": "npm run test"}, {"command": "git commit"}],
                              session_outcome="success")
    predictions = memory.predict_next_action(current_context=["npm install"], top_k=3)
    assert predictions[0].next_command == predictions[0].action == "npm run test"
    assert predictions[0].auto_suggestions == predictions[0].suggestions == ["git commit"]
    assert "next_command" not in predictions[0].model_dump()  # aliases, not extra stored fields
    again = asyncio.run(memory.apredict_next_action(current_context=["npm install"], top_k=1))
    assert again[0].action == "npm run test"
    assert memory.predict_next_action(context=["npm install"])[0].action == "npm run test"  # procmem's own name
    with pytest.raises(ValidationError, match="not both"):
        memory.predict_next_action(["npm install"], current_context=["npm install"])
    with pytest.raises(ValidationError, match="current_context must be a list"):
        memory.predict_next_action(current_context="npm install")
    with pytest.raises(ValidationError, match="context is required"):
        memory.predict_next_action()


def test_predictions_name_the_learned_workflow_and_follow_its_changes(tmp_path, embedder):
    path = tmp_path / "w.sqlite3"
    a = ProceduralMemory(path=path, embedder=embedder)
    for _ in range(3):
        a.learn_session(["git pull", "make build", "make deploy"], "success")
    [wf] = [p for p in a.store.list(kinds=["workflow"]) if p.metadata.get("learned")]
    first = a.predict_next_action(["git pull"])[0]
    assert first.action == "make build" and first.workflow_id == wf.id and "learned workflow" in first.reason
    a.update(wf.id, metadata={**wf.metadata, "status": "demoted"})  # a demoted workflow is not named
    assert a.predict_next_action(["git pull"])[0].workflow_id is None
    a.rollback(wf.id, 1)
    assert a.predict_next_action(["git pull"])[0].workflow_id == wf.id
    revision = a.store.revision()
    a.search("deploy")  # counts accesses: the procedures' content is unchanged
    a.record_usage("deploy", wf.id)
    assert a.store.revision() == revision
    b = ProceduralMemory(path=path, embedder=embedder)  # another connection, as another process has
    b.delete(wf.id)
    assert a.store.revision() != revision
    again = a.predict_next_action(["git pull"])[0]
    assert again.workflow_id is None and "learned workflow" not in again.reason
    b.close()
    a.close()


def test_causal_chains_of_an_action(memory):
    # Seed 001's causal chains: what followed an action and how its sessions ended.
    memory.learn_session(["make build", "make deploy"], "success")
    memory.learn_session(["make build", "make clean"], "failure")
    chain = memory.causal_chains("make build")
    assert chain["sessions"] == 2 and chain["outcomes"] == {"unknown": 0, "success": 1, "failure": 1}
    assert chain["next"] == {"make deploy": 1, "make clean": 1}
    assert asyncio.run(memory.acausal_chains("make build")) == chain
    assert memory.causal_chains("never seen")["sessions"] == 0
    with pytest.raises(ValidationError):
        memory.causal_chains("")


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_save_refuses_the_stores_own_database(memory, suffix):
    # os.replace put the export over the live SQLite file: the store was destroyed.
    memory.store_procedure("p", ["a"])
    memory.close()
    memory = ProceduralMemory(path=memory.store.path, embedder=memory.embedder)  # data now in the main file
    with pytest.raises(ValidationError, match="own database") as exc:
        memory.save(memory.store.path + suffix)
    assert exc.value.field == "path"
    memory.store_procedure("q", ["b"])
    memory.close()
    reopened = ProceduralMemory(path=memory.store.path, embedder=memory.embedder)
    assert [p.id for p in reopened.list()] == ["p", "q"]
    reopened.close()


def test_save_and_load_roundtrip(tmp_path, embedder, memory):
    memory.store_procedure("p", ["a"])
    memory.store_procedure("p", ["a", "b"])
    memory.learn_session(["x", "y"], "success", session_id="s1")
    path = tmp_path / "export.jsonl"
    assert memory.save(path) == 2
    header = json.loads(path.read_text().splitlines()[0])
    assert header["format"] == "procmem-export"
    other = ProceduralMemory(path=tmp_path / "other.sqlite3", embedder=embedder)
    assert other.load(path) == {"procedures": 1, "sessions": 1}
    assert [s.action for s in other.get("p").steps] == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text() + "{not json\n")
    third = ProceduralMemory(path=tmp_path / "third.sqlite3", embedder=embedder)
    with pytest.raises(ImportFormatError, match=":4"):
        third.load(bad)
    assert third.store.count() == 0  # validated before anything was written


def test_async_context_manager_closes_the_store(tmp_path, embedder):
    # Seed 004's quick start: ``async with AgentMemory(...) as memory``.
    async def go():
        async with ProceduralMemory(path=tmp_path / "a.sqlite3", embedder=embedder, namespace="my-agent") as m:
            await m.arecord_skill("error_handling", "When API returns 429, retry with exponential backoff",
                                  triggers=["rate limit", "429"])
            found = await m.afind_applicable_skills("rate limit 429")
        return m, found

    m, found = asyncio.run(go())
    assert found[0].procedure.name == "error_handling"
    with pytest.raises(StorageError, match="closed"):  # closed on exit
        m.list()


def test_async_twins(memory):
    async def go():
        p = await memory.aadd(Procedure(name="async deploy", description="deploy asynchronously"))
        found = await memory.asearch("deploy", k=1)
        await memory.arecord_outcome(p.id, True)
        return p, found

    p, found = asyncio.run(go())
    assert found[0].procedure.id == p.id
    assert memory.get(p.id, touch=False).stats.successes == 1


def test_every_public_method_has_an_async_twin():
    import inspect

    # Not I/O: a pure function of a record, and the accessor of an in-memory model.
    not_io = {"current_importance", "predictor"}
    public = [n for n, f in inspect.getmembers(ProceduralMemory, inspect.isfunction) if not n.startswith("_")]
    missing = [n for n in public if not inspect.iscoroutinefunction(getattr(ProceduralMemory, n))
               and n not in not_io and not inspect.iscoroutinefunction(getattr(ProceduralMemory, "a" + n, None))]
    assert missing == []


def test_async_twins_learn_predict_version_and_export(memory, tmp_path):
    async def go():
        for sid in ("s1", "s2"):
            for action in ("git pull", "make build", "make deploy"):
                await memory.aobserve(action, session_id=sid)
            await memory.aend_session(sid, "success")
        pid = await memory.astore_procedure("deploy", ["git pull", "make deploy"], description="Deploy it")
        await memory.aupdate(pid, description="Deploy the web app")
        versions = await memory.aversions(pid)
        restored = await memory.arollback_procedure(pid, 0)
        stats = await memory.astats()
        patterns = await memory.apatterns(min_count=2)
        saved = await memory.asave(tmp_path / "export.json")
        listed = await memory.alist(kind="workflow")
        return versions, restored, stats, patterns, saved, listed

    versions, restored, stats, patterns, saved, listed = asyncio.run(go())
    assert [v.version for v in versions] == [1, 2] and restored.description == "Deploy it"
    assert stats["sessions"] == 2 and any(p["steps"][:2] == ["git pull", "make build"] for p in patterns)
    assert saved >= 1 and "deploy" in [p.id for p in listed]
    assert memory.predict_next_action(["git pull"], top_k=1)[0].action == "make build"
