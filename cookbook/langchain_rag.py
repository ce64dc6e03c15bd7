"""Procedures as retrieval context: ``ProceduralMemoryRetriever`` in an LCEL RAG chain.

    python cookbook/langchain_rag.py                          # offline: fake LLM, hashing embedder
    python cookbook/langchain_rag.py --model openai:gpt-4o-mini --real-embeddings

A few runbooks are stored as procedures. For each question the retriever returns the most
relevant ones as documents (the procedure rendered as text; id, kind, version, score and
success rate in the metadata), the chain puts them in the prompt, and the LLM answers. The
answer's procedure is then credited with ``record_usage``, so retrieval learns from use.
Offline, a fake LLM answers by quoting the first procedure in its prompt.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from procmem import ProceduralMemory

from langchain_procmem import ProceduralMemoryRetriever

RUNBOOKS = [  # id, steps, description, triggers
    (
        "deploy-web",
        ["git pull", "make test", "make build", "make deploy"],
        "Deploy the web app to production",
        ["ship a release", "push the site live"],
    ),
    (
        "rollback-web",
        ["git revert HEAD", "make build", "make deploy"],
        "Roll back a bad web deploy",
        ["the deploy broke the site", "errors after a release"],
    ),
    (
        "rotate-keys",
        ["generate a new API key", "update the secret store", "revoke the old key"],
        "Rotate API keys",
        ["a key leaked", "scheduled key rotation"],
    ),
    (
        "refund-order",
        ["look up the order", "issue the refund", "email the customer"],
        "Refund a customer's order",
        ["a customer wants their money back", "return an item"],
    ),
]

QUESTIONS = [
    "How do I ship the web app to production?",
    "The last deploy broke the site, what now?",
    "A customer wants their money back",
]

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer with the steps of the most relevant procedure.\n\nProcedures:\n{procedures}"),
        ("human", "{question}"),
    ]
)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"[{d.metadata['id']}] {d.page_content}" for d in docs)


def fake_llm(prompt: PromptValue) -> str:
    """Offline stand-in for an LLM: quotes the first procedure of the prompt."""
    system = prompt.to_messages()[0].text
    block = system.split("Procedures:\n", 1)[1].split("\n\n", 1)[0]
    head, *steps = block.splitlines()
    numbered = [s.split(". ", 1)[1] for s in steps if s[:1].isdigit()]
    return f"Follow {head.split(']', 1)[0].lstrip('[')}: " + "; then ".join(numbered)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="provider:name for init_chat_model (default: offline fake LLM)")
    parser.add_argument("--real-embeddings", action="store_true", help="use all-MiniLM-L6-v2 (procmem[embeddings])")
    parser.add_argument("-k", type=int, default=2, help="procedures per question")
    args = parser.parse_args(argv)

    llm: Runnable
    if args.model:
        from langchain.chat_models import init_chat_model

        llm = init_chat_model(args.model)
    else:
        llm = RunnableLambda(fake_llm)
    if args.real_embeddings:
        embedder = None  # the default: sentence-transformers all-MiniLM-L6-v2
    else:
        from procmem.embeddings import HashingEmbedder

        embedder = HashingEmbedder()

    with tempfile.TemporaryDirectory() as tmp:
        memory = ProceduralMemory(path=Path(tmp) / "rag.sqlite3", embedder=embedder)
        for pid, steps, description, triggers in RUNBOOKS:
            memory.store_procedure(pid, steps, description=description, triggers=triggers)
        retriever = ProceduralMemoryRetriever(memory=memory, k=args.k)
        chain = (
            {"procedures": retriever | format_docs, "question": RunnablePassthrough()}
            | PROMPT
            | llm
            | StrOutputParser()
        )
        served: list[tuple[str, str]] = []
        for question in QUESTIONS:
            docs = retriever.invoke(question)
            print(f"Q: {question}")
            for d in docs:
                print(f"  retrieved {d.metadata['id']} (score {d.metadata['score']:.3f}, {d.metadata['kind']})")
            print(f"A: {chain.invoke(question)}")
            served.append((question, docs[0].metadata["id"]))
        # The answers worked: credit the procedures that served them, and retrieval learns.
        for question, pid in served:
            memory.record_usage(question, pid, success=True)
        print(f"usages recorded: {memory.stats()['usages']}")
        question, pid = served[0]
        again = {d.metadata["id"]: d.metadata["score"] for d in retriever.invoke(question)}
        print(f"asked again: {pid} now scores {again.get(pid, float('nan')):.3f} for {question!r}")
        memory.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
