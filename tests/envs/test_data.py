"""Tests for agentdistill.envs.data (task loaders) and the retrieval corpus loader.

Real files come from the shared data folder next to the repository (see its README); they are read
in place, never copied. Error paths use small files written to tmp_path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentdistill.envs.data import (
    FORMATS,
    HUB_SOURCES,
    DataFormatError,
    HubLoadError,
    HubSource,
    SkippedRecordsWarning,
    hub_source_for,
    load_hub_tasks,
    load_tasks,
)
from agentdistill.envs.data.contexts import join_sentences
from agentdistill.envs.data.fields import number_text
from agentdistill.envs.data.gsm8k import final_number
from agentdistill.envs.data.math_solutions import last_boxed
from agentdistill.envs.tasks import Document, Task
from agentdistill.envs.tools.retrieval.corpus import iter_corpus, load_corpus, split_contents

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
# The conftest's `shared_data` fixture fails these tests with a clear message if the data is missing.
needs_data = pytest.mark.usefixtures("shared_data")

PAPER_QA = DATA / "agent-distillation" / "qa_dataset"
PAPER_MATH = DATA / "agent-distillation" / "math_dataset"
HOTPOT_HF = DATA / "hotpotqa" / "distractor_dev_500_hf.jsonl"
HOTPOT_ORIGINAL = DATA / "hotpotqa" / "distractor_dev_200_original.jsonl"
MUSIQUE_DEV = DATA / "musique" / "musique_ans_dev_200.jsonl"
MUSIQUE_TRAIN = DATA / "musique" / "musique_ans_train_100.json"
TWOWIKI_DEV = DATA / "2wiki" / "2wiki_dev_2.json"
TWOWIKI_CORPUS = DATA / "2wiki" / "2wiki_corpus_6119.json"
WIKI18_SAMPLE = DATA / "corpora" / "flashrag_wiki18_sample_1000.jsonl"
GSM8K = DATA / "math" / "gsm8k_test_1319.jsonl"
MATH500 = DATA / "math" / "math500_test.jsonl"
GSMHARD = DATA / "math" / "gsmhard_v2_1319.jsonl"


def read_jsonl(path: Path, count: int | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows if count is None else rows[:count]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_shared_data_path_resolves_next_to_the_repository() -> None:
    assert DATA == Path(__file__).resolve().parents[3] / "shared" / "data"
    assert DATA.name == "data" and DATA.parent.name == "shared"


# --------------------------------------------------------------------------------------------------
# The paper's question lists


@needs_data
@pytest.mark.parametrize(
    ("relative", "count", "first_id", "first_answer", "dataset_name"),
    [
        ("test/hotpotqa_500_20250422.json", 500, "5a85eed75542996432c5713b", "Coahuila, Mexico", "hotpotqa/hotpot_qa"),
        ("test/bamboogle_125_20250507.json", 125, "0", "james madison", "chiayewken/bamboogle"),
        ("test/musique_500_20250504.json", 500, "3hop1__454441_55349_651302", "Denver", "dgslibisey/MuSiQue"),
        ("test/2wikimultihopqa_500_20250511.json", 500, "10476", "Cahiers du cinéma", "2wikimultihopqa"),
        ("train/hotpotqa_1000_20250402.json", 1000, "5a8d7341554299441c6b9fe5", "President Richard Nixon",
         "hotpotqa/hotpot_qa"),
    ],
)
def test_paper_qa_lists(relative: str, count: int, first_id: str, first_answer: str, dataset_name: str) -> None:
    tasks = load_tasks(PAPER_QA / relative, kind="qa")
    assert len(tasks) == count
    assert len({task.task_id for task in tasks}) == count
    first = tasks[0]
    assert (first.task_id, first.answer) == (first_id, first_answer)
    assert first.documents == () and first.aliases == ()
    assert first.metadata["level"] == "hard"
    assert first.metadata["dataset_name"] == dataset_name
    assert first.metadata["format"] == "paper_list"


@needs_data
def test_paper_hotpotqa_list_first_question() -> None:
    first = load_tasks(PAPER_QA / "test" / "hotpotqa_500_20250422.json", kind="qa")[0]
    assert first.question == (
        "Where did the descendants of the group of black Indians associated with the Seminole people settle?"
    )
    assert first.metadata["type"] == "hotpot"
    assert first.metadata["split"] == "test"


@needs_data
@pytest.mark.parametrize(
    ("relative", "count", "first_answer"),
    [
        ("test/math_500_20250414.json", 500, "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("test/aime_90_20250504.json", 90, "116"),
        ("test/olymath_200_20250511.json", 200, "948"),
        ("test/gsm_hard_500_20250507.json", 500, "13138980"),
    ],
)
def test_paper_math_lists(relative: str, count: int, first_answer: str) -> None:
    tasks = load_tasks(PAPER_MATH / relative, kind="math")
    assert len(tasks) == count
    assert tasks[0].answer == first_answer
    assert all(isinstance(task.answer, str) and task.answer for task in tasks)


@needs_data
def test_paper_math_lists_keep_level_type_subject_and_url() -> None:
    math500 = load_tasks(PAPER_MATH / "test" / "math_500_20250414.json", kind="math")[0]
    assert (math500.task_id, math500.metadata["level"], math500.metadata["type"]) == ("0", 2, "Precalculus")
    with pytest.warns(SkippedRecordsWarning):
        train = load_tasks(PAPER_MATH / "train" / "math_1000_20250414.json", kind="math")[0]
    assert (train.metadata["level"], train.metadata["type"]) == ("Level 5", "Algebra")
    olym = load_tasks(PAPER_MATH / "test" / "olymath_200_20250511.json", kind="math")[0]
    assert olym.metadata["subject"] == "Combinatorics"
    aime = load_tasks(PAPER_MATH / "test" / "aime_90_20250504.json", kind="math")[0]
    assert aime.metadata["url"].endswith("2022_AIME_I_Problems/Problem_1")
    assert "solution" in aime.metadata


@needs_data
def test_paper_gsm_hard_float_answers_become_text() -> None:
    tasks = load_tasks(PAPER_MATH / "test" / "gsm_hard_500_20250507.json", kind="math")
    first = tasks[0]
    assert first.task_id == "1309"
    assert first.question.startswith("Marin and his neighbor Nancy each eat 218983 apples a day.")
    assert first.answer == "13138980"
    assert first.metadata["answer_value"] == 13138980.0
    by_answer = {task.answer: task for task in tasks}
    assert "561161.7000000001" in by_answer  # non-integral floats keep full precision
    assert float(by_answer["561161.7000000001"].answer) == by_answer["561161.7000000001"].metadata["answer_value"]


@needs_data
def test_paper_math_train_list_with_empty_answers_skips_them_with_a_warning() -> None:
    path = PAPER_MATH / "train" / "math_1000_20250414.json"
    with pytest.warns(SkippedRecordsWarning, match=r"skipped 2 record\(s\).*: 174, 499$"):
        tasks = load_tasks(path, kind="math")
    assert len(tasks) == 998
    assert tasks[0].answer == "(-\\infty,-8]\\cup [8,\\infty)"
    assert {"174", "499"}.isdisjoint(task.task_id for task in tasks)


@needs_data
def test_paper_list_with_null_answers_skips_them_with_a_warning() -> None:
    path = PAPER_MATH / "train" / "math_medium_1000_20250430.json"
    with pytest.warns(SkippedRecordsWarning, match=r"skipped 2 record\(s\).*124, 519"):
        tasks = load_tasks(path, kind="math")
    assert len(tasks) == 998
    assert "124" not in {task.task_id for task in tasks}
    assert tasks[0].answer == "-6"


# --------------------------------------------------------------------------------------------------
# HotpotQA


@needs_data
def test_hotpotqa_hub_layout_first_dev_question() -> None:
    tasks = load_tasks(HOTPOT_HF, kind="qa")
    assert len(tasks) == 500
    first = tasks[0]
    assert first.task_id == "5a7d5c175542991319bc93b1"
    assert first.question == "Between Harvey Pekar and Denise Levertov who was born earlier?"
    assert first.answer == "Denise Levertov"
    assert len(first.documents) == 10
    assert first.documents[0] == Document(
        title="Gerry Shamray",
        text=(
            "Gerry Shamray is an American comic book artist. He illustrated many issues of \"American "
            "Splendor\", Harvey Pekar's autobiographical comics. In an introduction to a compilation of "
            "Pekar's work, R. Crumb stated that Shamray \"went all the way, taking hundreds of photos of "
            "Pekar, his wife, his apartment, the streets of his neighborhood, and so on, and drew from the "
            "photos.\""
        ),
        doc_id="Gerry Shamray",
    )
    assert first.metadata["type"] == "comparison" and first.metadata["level"] == "hard"
    assert first.metadata["supporting_facts"] == (("Harvey Pekar", 0), ("Denise Levertov", 0))
    assert first.metadata["supporting_doc_ids"] == ("Harvey Pekar", "Denise Levertov")
    doc_ids = {doc.doc_id for doc in first.documents}
    assert set(first.metadata["supporting_doc_ids"]) <= doc_ids


@needs_data
def test_hotpotqa_more_dev_files_are_disjoint() -> None:
    ids = [
        {task.task_id for task in load_tasks(DATA / "hotpotqa" / name, kind="qa")}
        for name in ("distractor_dev_300_hf.jsonl", "distractor_dev_300b_hf.jsonl")
    ]
    assert [len(group) for group in ids] == [300, 300]
    assert not ids[0] & ids[1]


@needs_data
def test_hotpotqa_original_layout() -> None:
    tasks = load_tasks(HOTPOT_ORIGINAL, kind="qa")
    assert len(tasks) == 200
    first = tasks[0]
    assert first.task_id == "5a7613c15542994ccc9186bf"
    assert first.answer == "Gesellschaft mit beschränkter Haftung"
    assert len(first.documents) == 10
    viva = next(doc for doc in first.documents if doc.title == "VIVA Poland")
    assert viva.text.startswith(
        'VIVA Polska (earlier "VIVApolska!") is a Polish 24h music and entertainment channel'
    )
    assert first.metadata["supporting_doc_ids"] == ("VIVA Media", "Gesellschaft mit beschränkter Haftung")


@needs_data
def test_hotpotqa_both_layouts_give_the_same_tasks() -> None:
    hub_layout = {task.task_id: task for task in load_tasks(HOTPOT_HF, kind="qa")}
    original = {task.task_id: task for task in load_tasks(HOTPOT_ORIGINAL, kind="qa")}
    shared = hub_layout.keys() & original.keys()
    assert len(shared) == 21
    for task_id in shared:
        a, b = hub_layout[task_id], original[task_id]
        assert (a.question, a.answer) == (b.question, b.answer)
        assert [doc.title for doc in a.documents] == [doc.title for doc in b.documents]
        assert a.metadata["supporting_doc_ids"] == b.metadata["supporting_doc_ids"]


# --------------------------------------------------------------------------------------------------
# MuSiQue


@needs_data
def test_musique_dev_jsonl() -> None:
    tasks = load_tasks(MUSIQUE_DEV, kind="qa")
    assert len(tasks) == 200
    first = tasks[0]
    assert first.task_id == "2hop__574419_270105"
    assert first.question == "What is the seat of the county where Van Hook Township is located?"
    assert first.answer == "Stanley"
    assert len(first.documents) == 20
    assert first.documents[0].title == "Port Blair"
    assert first.documents[0].text.startswith("Port Blair (pronunciation (help info)) is the capital")
    supporting = first.metadata["supporting_doc_ids"]
    assert [doc_id.split("#")[0] for doc_id in supporting] == [
        "Mountrail County Courthouse",
        "Van Hook Township, Mountrail County, North Dakota",
    ]
    assert tasks[2].aliases == ("Orioles", "Pirates", "Baltimore Orioles", "New York Mets", "Mets")
    assert sum(bool(task.aliases) for task in tasks) == 61
    assert first.metadata["answerable"] is True
    assert "question_decomposition" in first.metadata


@needs_data
def test_musique_doc_ids_stay_distinct_when_an_article_gives_several_paragraphs() -> None:
    tasks = load_tasks(MUSIQUE_DEV, kind="qa")
    repeated = [task for task in tasks if len({doc.title for doc in task.documents}) < len(task.documents)]
    assert repeated  # the real data has them
    for task in tasks:
        assert len({doc.doc_id for doc in task.documents}) == len({(d.title, d.text) for d in task.documents})
    # equal paragraphs in different questions share an id, so pooling deduplicates them
    by_id: dict[str, str] = {}
    for task in tasks:
        for doc in task.documents:
            assert by_id.setdefault(doc.doc_id, doc.text) == doc.text


@needs_data
def test_musique_train_json_list() -> None:
    tasks = load_tasks(MUSIQUE_TRAIN, kind="qa")
    assert len(tasks) == 100
    first = tasks[0]
    assert first.task_id == "2hop__150763_14904"
    assert first.answer == "G. Stanley Hall"
    assert first.aliases == ("Stanley Hall",)
    assert len(first.documents) == 20


@needs_data
def test_musique_json_list_and_jsonl_read_alike(tmp_path: Path) -> None:
    rows = read_jsonl(MUSIQUE_DEV, 5)
    as_list = tmp_path / "musique.json"
    as_list.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    from_list = load_tasks(as_list, kind="qa")
    from_lines = load_tasks(write_jsonl(tmp_path / "musique.jsonl", rows), kind="qa")
    assert from_list == from_lines
    assert from_list == load_tasks(MUSIQUE_DEV, kind="qa")[:5]


# --------------------------------------------------------------------------------------------------
# 2WikiMultihopQA


@needs_data
def test_twowiki_original_layout() -> None:
    tasks = load_tasks(TWOWIKI_DEV, kind="qa")
    assert [task.task_id for task in tasks] == ["83bf3b5a0bd911eba7f7acde48001122", "a80d84e7096d11ebbdb0ac1f6bf848b6"]
    assert [task.answer for task in tasks] == ["20 March 851", "Phoolwari"]
    assert tasks[0].question == "When did Lothair Ii's mother die?"
    assert tasks[0].documents[0].title == "Teutberga"
    assert tasks[0].metadata["format"] == "2wikimultihopqa"
    assert tasks[0].metadata["supporting_doc_ids"] == ("Lothair II", "Ermengarde of Tours")
    assert tasks[0].metadata["evidences"][0] == ["Lothair II", "mother", "Ermengarde of Tours"]


@needs_data
def test_twowiki_paragraphs_match_the_released_corpus() -> None:
    corpus = {doc.title: doc.text for doc in load_corpus(TWOWIKI_CORPUS)}
    for task in load_tasks(TWOWIKI_DEV, kind="qa"):
        assert len(task.documents) == 10
        for doc in task.documents:
            assert corpus[doc.title] == doc.text


@needs_data
def test_twowiki_string_context_is_parsed_as_a_literal(tmp_path: Path) -> None:
    records = json.loads(TWOWIKI_DEV.read_text(encoding="utf-8"))
    for record in records:
        record["context"] = repr(record["context"])  # the Python repr some hub exports carry
        record["supporting_facts"] = repr(record["supporting_facts"])
    path = write_jsonl(tmp_path / "2wiki_stringified.jsonl", records)
    assert load_tasks(path, kind="qa") == load_tasks(TWOWIKI_DEV, kind="qa")


def test_twowiki_string_context_is_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    record = {
        "_id": "x",
        "question": "q?",
        "answer": "a",
        "type": "compositional",
        "context": f"__import__('pathlib').Path({str(marker)!r}).touch()",
    }
    with pytest.raises(DataFormatError, match=r"record 0: field 'context' is a string but not"):
        load_tasks(write_jsonl(tmp_path / "evil.jsonl", [record]), kind="qa")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# Math files


@needs_data
def test_gsm8k() -> None:
    tasks = load_tasks(GSM8K, kind="math")
    assert len(tasks) == 1319
    first = tasks[0]
    assert first.task_id == "gsm8k_test_1319-0"
    assert first.answer == "18"
    assert first.question.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert first.metadata["solution"].endswith("She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u2019s market.")
    assert tasks[146].answer == "2125"  # "#### 2,125"
    assert tasks[489].answer == "-10"


@needs_data
def test_math500() -> None:
    tasks = load_tasks(MATH500, kind="math")
    assert len(tasks) == 500
    first = tasks[0]
    assert first.task_id == "test/precalculus/807.json"
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.question.startswith("Convert the point $(0,3)$ in rectangular coordinates")
    assert (first.metadata["subject"], first.metadata["level"]) == ("Precalculus", 2)
    assert "\\boxed" in first.metadata["solution"]


@needs_data
def test_gsmhard() -> None:
    tasks = load_tasks(GSMHARD, kind="math")
    assert len(tasks) == 1319
    first = tasks[0]
    assert first.task_id == "gsmhard_v2_1319-0"
    assert first.answer == "-9867630"
    assert first.metadata["target"] == -9867630.0
    assert first.metadata["code"].lstrip().startswith("def solution():")
    assert first.question.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert "4933828" in first.question


# --------------------------------------------------------------------------------------------------
# Sniffing the format from content, not the file name


@needs_data
def test_format_is_read_from_content_not_extension(tmp_path: Path) -> None:
    disguised = tmp_path / "whatever.txt"
    disguised.write_bytes(HOTPOT_HF.read_bytes())
    assert load_tasks(disguised, kind="qa")[0] == load_tasks(HOTPOT_HF, kind="qa")[0]
    # a JSON Lines file named .json, and a paper list named .jsonl on one line
    lines_named_json = write_jsonl(tmp_path / "gsm.json", read_jsonl(GSM8K, 3))
    assert [task.answer for task in load_tasks(lines_named_json, kind="math")] == ["18", "3", "70000"]
    paper = json.loads((PAPER_QA / "test" / "bamboogle_125_20250507.json").read_text(encoding="utf-8"))
    one_line = tmp_path / "bamboogle.jsonl"
    one_line.write_text(json.dumps(paper) + "\n", encoding="utf-8")
    assert len(load_tasks(one_line, kind="qa")) == 125


@pytest.mark.parametrize(
    ("record", "format_name"),
    [
        ({"id": "1", "question": "q", "answer": "a", "context": {"title": ["T"], "sentences": [["s."]]}}, "hotpotqa"),
        ({"_id": "1", "question": "q", "answer": "a", "context": [["T", ["s."]]]}, "hotpotqa"),
        ({"_id": "1", "question": "q", "answer": "a", "context": [["T", ["s."]]], "evidences": []}, "2wikimultihopqa"),
        ({"id": "1", "question": "q", "answer": "a", "paragraphs": [{"title": "T", "paragraph_text": "p"}]}, "musique"),
        ({"question": "q", "answer": "so 2 #### 2"}, "gsm8k"),
        ({"problem": "p", "answer": "1", "unique_id": "u"}, "math500"),
        ({"problem": "p", "solution": "so $\\boxed{\\frac{1}{2}}$."}, "math_solution"),
        ({"input": "q", "code": "", "target": 2.5}, "gsmhard"),
        ({"Question": "q", "Answer": "a"}, "bamboogle"),
    ],
)
def test_each_layout_is_sniffed(tmp_path: Path, record: dict[str, Any], format_name: str) -> None:
    kind = FORMATS[format_name].kind
    assert kind is not None
    task = load_tasks(write_jsonl(tmp_path / "one.jsonl", [record]), kind=kind)[0]
    assert task.metadata["format"] == format_name
    assert task.question in {"q", "p"}


def test_record_without_id_gets_stem_and_index(tmp_path: Path) -> None:
    rows = [{"problem": "p1", "answer": 1}, {"problem": "p2", "answer": "2"}]
    tasks = load_tasks(write_jsonl(tmp_path / "mini_math.jsonl", rows), kind="math")
    assert [task.task_id for task in tasks] == ["mini_math-0", "mini_math-1"]
    assert [task.answer for task in tasks] == ["1", "2"]


# --------------------------------------------------------------------------------------------------
# Errors


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "tasks.jsonl"
    with pytest.raises(FileNotFoundError, match="tasks.jsonl") as info:
        load_tasks(path, kind="qa")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", ["", "   \n\n  \t\n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match="empty") as info:
        load_tasks(path, kind="qa")
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_record_missing_fields_names_them_and_the_index(tmp_path: Path) -> None:
    good = {"id": "a", "question": "q", "answer": "x", "context": [["T", ["s."]]]}
    bad = {"id": "c", "context": [["T", ["s."]]]}
    path = write_jsonl(tmp_path / "hotpot.jsonl", [good, good, bad])
    with pytest.raises(DataFormatError) as info:
        load_tasks(path, kind="qa")
    message = str(info.value)
    assert str(path) in message
    assert "record 2" in message
    assert "'question'" in message and "'answer'" in message
    assert "HotpotQA" in message and "context" in message  # what was expected
    assert (info.value.index, info.value.missing) == (2, ("question", "answer"))


def test_paper_list_example_missing_answer(tmp_path: Path) -> None:
    payload = {"metadata": {}, "examples": [{"id": "0", "question": "q", "answer": "a"}, {"id": "1", "question": "q"}]}
    path = tmp_path / "list.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"record 1: missing field\(s\) 'answer'.*examples"):
        load_tasks(path, kind="qa")


def test_unknown_format_lists_what_was_expected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mystery.jsonl", [{"prompt": "hi", "completion": "there"}])
    with pytest.raises(DataFormatError) as info:
        load_tasks(path, kind="qa")
    message = str(info.value)
    assert "unrecognised data format" in message
    assert "completion, prompt" in message
    for title in ("HotpotQA", "MuSiQue", "2WikiMultihopQA", "GSM8K", "GSM-Hard", "MATH-500", "question list"):
        assert title in message


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"question": "q", "answer": "#### 1"}\n{"question": oops}\n', "line 2: invalid JSON"),
        ("question,answer\nq,a\n", "not JSON or JSON Lines"),
        ("42", "neither a list of records nor an object"),
        ("[]", "holds no records"),
        ("[1, 2]", "record 0: is a JSON int"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match=pattern):
        load_tasks(path, kind="math")


def test_binary_file_and_directory(tmp_path: Path) -> None:
    binary = tmp_path / "blob.jsonl"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(DataFormatError, match="not UTF-8"):
        load_tasks(binary, kind="qa")
    with pytest.raises(DataFormatError, match="is a directory"):
        load_tasks(tmp_path, kind="qa")


@needs_data
@pytest.mark.parametrize(
    ("path", "wrong_kind", "right_kind"),
    [
        (GSM8K, "qa", "math"),
        (HOTPOT_HF, "math", "qa"),
        (PAPER_MATH / "test" / "gsm_hard_500_20250507.json", "qa", "math"),
        (PAPER_QA / "test" / "bamboogle_125_20250507.json", "math", "qa"),
    ],
)
def test_wrong_kind_is_refused(path: Path, wrong_kind: str, right_kind: str) -> None:
    with pytest.raises(DataFormatError) as info:
        load_tasks(path, kind=wrong_kind)  # type: ignore[arg-type]
    message = str(info.value)
    assert f"kind={wrong_kind!r}" in message and f"kind={right_kind!r}" in message
    assert str(path) in message


def test_invalid_kind_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        load_tasks(tmp_path / "x.jsonl", kind="code")  # type: ignore[arg-type]


def test_gsm8k_record_without_marker(tmp_path: Path) -> None:
    rows = [{"question": "q", "answer": "so #### 4"}, {"question": "q2", "answer": "the answer is 5"}]
    with pytest.raises(DataFormatError, match=r"record 1: field 'answer' does not end with '#### N'"):
        load_tasks(write_jsonl(tmp_path / "gsm.jsonl", rows), kind="math")


def test_math_solution_without_boxed_answer(tmp_path: Path) -> None:
    rows = [{"problem": "p", "solution": "It is 4.", "level": "Level 1", "type": "Algebra"}]
    with pytest.raises(DataFormatError, match=r"record 0: field 'solution' has no \\boxed"):
        load_tasks(write_jsonl(tmp_path / "math.jsonl", rows), kind="math")


def test_malformed_context(tmp_path: Path) -> None:
    rows = [{"id": "1", "question": "q", "answer": "a", "context": {"title": ["A", "B"], "sentences": [["s"]]}}]
    with pytest.raises(DataFormatError, match="2 titles but 1 sentence lists"):
        load_tasks(write_jsonl(tmp_path / "hotpot.jsonl", rows), kind="qa")


# --------------------------------------------------------------------------------------------------
# Hub loading. The test replaces `datasets.load_dataset` -- the outermost boundary, the one call that
# would reach the network -- with a fake that returns `datasets.Dataset.from_list(rows)` built from
# the local files, so everything after it (row iteration, conversion, limits) runs for real.


class FakeHub:
    """Stands in for `datasets.load_dataset`, serving local rows per (path, config, split)."""

    def __init__(self, tables: dict[tuple[str, str | None, str], list[dict[str, Any]]]) -> None:
        self.tables = tables
        self.calls: list[tuple[str, str | None, str]] = []

    def __call__(self, path: str, name: str | None = None, *, split: str, **kwargs: Any) -> Any:
        import datasets

        self.calls.append((path, name, split))
        return datasets.Dataset.from_list(self.tables[(path, name, split)])


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    datasets = pytest.importorskip("datasets")
    hub = FakeHub({})
    monkeypatch.setattr(datasets, "load_dataset", hub)
    return hub


def test_hub_sources_cover_every_paper_task() -> None:
    expected = {
        "HotpotQA": ("hotpotqa/hotpot_qa", "distractor", "validation", "qa"),
        "Bamboogle": ("chiayewken/bamboogle", None, "test", "qa"),
        "MuSiQue": ("dgslibisey/MuSiQue", None, "validation", "qa"),
        "2WikiMultiHopQA": ("framolfese/2WikiMultihopQA", None, "validation", "qa"),
        "MATH": ("DigitalLearningGmbH/MATH-lighteval", "default", "train", "math"),
        "MATH500": ("HuggingFaceH4/MATH-500", None, "test", "math"),
        "GSMHard": ("reasoning-machines/gsm-hard", None, "train", "math"),
        "AIME": ("AI-MO/aimo-validation-aime", None, "train", "math"),
        "OlymMATH": ("RUC-AIBOX/OlymMATH", "en-easy", "test", "math"),
    }
    for task_name, (path, name, split, kind) in expected.items():
        source = hub_source_for(task_name)
        assert (source.path, source.name, source.split, source.kind) == (path, name, split, kind)
        assert FORMATS[source.format].kind == kind
    assert hub_source_for("OlymMATH").configs == ("en-easy", "en-hard")
    assert hub_source_for("2wikimultihopqa") is HUB_SOURCES["2WikiMultiHopQA"]
    assert hub_source_for("gsm-hard") is HUB_SOURCES["GSMHard"]
    with pytest.raises(ValueError, match="known tasks: HotpotQA"):
        hub_source_for("TriviaQA")
    with pytest.raises(AttributeError):
        source.split = "train"  # type: ignore[misc]
    with pytest.raises(ValueError, match="format must be one of"):
        HubSource("x/y", None, "test", "qa", "paper_list")
    with pytest.raises(ValueError, match="holds math tasks, not qa"):
        HubSource("x/y", None, "test", "qa", "gsm8k")


@needs_data
def test_hub_hotpotqa_rows_convert_like_the_local_file(fake_hub: FakeHub) -> None:
    source = hub_source_for("HotpotQA")
    fake_hub.tables[(source.path, source.name, source.split)] = read_jsonl(HOTPOT_HF, 4)
    tasks = load_hub_tasks(source)
    assert fake_hub.calls == [("hotpotqa/hotpot_qa", "distractor", "validation")]
    assert tasks == load_tasks(HOTPOT_HF, kind="qa")[:4]
    assert len(tasks[0].documents) == 10


@needs_data
def test_hub_musique_and_math500_and_gsmhard(fake_hub: FakeHub) -> None:
    for task_name, path in (("MuSiQue", MUSIQUE_DEV), ("MATH500", MATH500), ("GSMHard", GSMHARD)):
        source = hub_source_for(task_name)
        fake_hub.tables[(source.path, source.name, source.split)] = read_jsonl(path, 3)
        tasks = load_hub_tasks(source, limit=2)
        local = load_tasks(path, kind=source.kind)[:2]
        assert [(t.question, t.answer, t.aliases, t.documents) for t in tasks] == [
            (t.question, t.answer, t.aliases, t.documents) for t in local
        ]
    gsmhard = load_hub_tasks(hub_source_for("GSMHard"), limit=1)[0]
    assert gsmhard.task_id == "gsm-hard-train-0"
    assert gsmhard.answer == "-9867630"


@needs_data
def test_hub_twowiki_with_string_context(fake_hub: FakeHub) -> None:
    rows = json.loads(TWOWIKI_DEV.read_text(encoding="utf-8"))
    for row in rows:
        row["context"] = repr(row["context"])
        row["supporting_facts"] = json.dumps(row["supporting_facts"])
        row["evidences"] = json.dumps(row["evidences"])
        row["evidences_id"] = json.dumps(row["evidences_id"])
    source = hub_source_for("2WikiMultiHopQA")
    fake_hub.tables[(source.path, source.name, source.split)] = rows
    tasks = load_hub_tasks(source)
    local = load_tasks(TWOWIKI_DEV, kind="qa")
    assert [(t.task_id, t.answer, t.documents) for t in tasks] == [(t.task_id, t.answer, t.documents) for t in local]


def test_hub_layouts_without_local_files(fake_hub: FakeHub) -> None:
    bamboogle = hub_source_for("Bamboogle")
    fake_hub.tables[(bamboogle.path, None, "test")] = [
        {"Question": "Who was president of the United States in the year that Citibank was founded?",
         "Answer": "james madison"},
    ]
    [task] = load_hub_tasks(bamboogle)
    assert (task.task_id, task.answer, task.documents) == ("bamboogle-test-0", "james madison", ())

    math = hub_source_for("MATH")
    fake_hub.tables[(math.path, "default", "train")] = [
        {"problem": "Compute $1/2+0$.", "level": "Level 4", "type": "Algebra",
         "solution": "We get $\\boxed{\\frac{1}{2}}$."},
    ]
    [task] = load_hub_tasks(math)
    assert task.answer == "\\frac{1}{2}"
    assert task.metadata["level"] == "Level 4"

    aime = hub_source_for("AIME")
    fake_hub.tables[(aime.path, None, "train")] = [
        {"id": 60, "problem": "Find N.", "solution": "...", "answer": 204, "url": "https://example.org/p"},
    ]
    [task] = load_hub_tasks(aime)
    assert (task.task_id, task.answer) == ("60", "204")


def test_hub_olymmath_loads_both_configs_lazily(fake_hub: FakeHub) -> None:
    source = hub_source_for("OlymMATH")
    for config in source.configs:
        fake_hub.tables[(source.path, config, "test")] = [
            {"unique_id": f"{config}-{i}", "problem": f"{config} problem {i}", "answer": str(i), "subject": "Algebra"}
            for i in range(3)
        ]
    tasks = load_hub_tasks(source)
    assert [task.task_id for task in tasks][::3] == ["en-easy-0", "en-hard-0"]
    assert len(tasks) == 6
    fake_hub.calls.clear()
    assert len(load_hub_tasks(source, limit=2)) == 2
    assert fake_hub.calls == [("RUC-AIBOX/OlymMATH", "en-easy", "test")]  # en-hard never fetched
    assert load_hub_tasks(source, limit=0) == []


def test_hub_rows_missing_fields(fake_hub: FakeHub) -> None:
    source = hub_source_for("MATH500")
    # Arrow gives every row every column, so a field absent from one row arrives as null
    fake_hub.tables[(source.path, None, "test")] = [{"problem": "p", "answer": "1"}, {"answer": "2", "subject": "x"}]
    with pytest.raises(DataFormatError, match=r"hub dataset HuggingFaceH4/MATH-500 .*record 1: field 'problem' must be a string, got null") as info:
        load_hub_tasks(source)
    assert info.value.missing == ("problem",)


def test_hub_failure_says_to_pass_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'hotpotqa/hotpot_qa' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HubLoadError, match="data_path=") as info:
        load_hub_tasks(hub_source_for("HotpotQA"))
    assert "hotpotqa/hotpot_qa" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)


# --------------------------------------------------------------------------------------------------
# Retrieval corpora


@needs_data
def test_flashrag_wiki18_sample() -> None:
    documents = load_corpus(WIKI18_SAMPLE)
    assert len(documents) == 1000
    first = documents[0]
    assert (first.doc_id, first.title) == ("0", "Evan Morris")
    assert first.text.startswith("Evan Morris Evan L. Morris (January 26, 1977")
    assert documents[1].title == "Horatio Hale"
    assert not any(doc.title.startswith('"') or doc.title.endswith('"') for doc in documents)
    assert [doc.doc_id for doc in documents] == [str(i) for i in range(1000)]


@needs_data
def test_twowiki_corpus_json_list() -> None:
    documents = load_corpus(TWOWIKI_CORPUS)
    assert len(documents) == 6119
    assert documents[0] == Document(
        title="Teutberga",
        text=(
            "Teutberga( died 11 November 875) was a queen of Lotharingia by marriage to Lothair II. She was "
            "a daughter of Bosonid Boso the Elder and sister of Hucbert, the lay- abbot of St. Maurice's Abbey."
        ),
        doc_id="Teutberga",
    )


@needs_data
def test_iter_corpus_streams() -> None:
    iterator = iter_corpus(WIKI18_SAMPLE)
    assert iter(iterator) is iterator
    assert next(iterator).title == "Evan Morris"
    assert next(iterator).doc_id == "1"


def test_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        iter_corpus(tmp_path / "missing.jsonl")  # raised at the call, before iteration
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="empty"):
        load_corpus(empty)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "0", "contents": '"A"\ntext'}, {"id": "1", "body": "x"}])
    with pytest.raises(DataFormatError, match=r"bad.jsonl: line 2: missing field\(s\) 'contents'") as info:
        load_corpus(bad)
    assert info.value.missing == ("contents",)
    no_title = tmp_path / "list.json"
    no_title.write_text(json.dumps([{"title": "A", "text": "t"}, {"text": "t"}]), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"record 1: missing field\(s\) 'title'"):
        load_corpus(no_title)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "0", "contents": "x"}\n{nope\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match="line 2: invalid JSON"):
        load_corpus(broken)


def test_corpus_title_text_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "paras.jsonl", [{"title": "A", "text": "alpha"}, {"id": 7, "title": "B", "text": "beta"}])
    assert load_corpus(path) == [Document("A", "alpha", "A"), Document("B", "beta", "7")]


@pytest.mark.parametrize(
    ("contents", "expected"),
    [
        ('"Evan Morris"\nEvan Morris was a lobbyist.', ("Evan Morris", "Evan Morris was a lobbyist.")),
        ('""Weird Al" Yankovic"\nAlfred Yankovic', ('"Weird Al" Yankovic', "Alfred Yankovic")),
        ("Plain title\nbody\nmore", ("Plain title", "body\nmore")),
        ("no title line at all", ("", "no title line at all")),
    ],
)
def test_split_contents(contents: str, expected: tuple[str, str]) -> None:
    assert split_contents(contents) == expected


# --------------------------------------------------------------------------------------------------
# Helpers


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_number_text_round_trips(value: float) -> None:
    text = number_text(value)
    assert float(text) == value
    assert not text.endswith(".0")


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_gsm8k_final_number_drops_thousands_commas(value: int) -> None:
    assert final_number(f"work <<x=y>> done\n#### {value:,}") == str(value)


@pytest.mark.parametrize(
    ("solution", "answer"),
    [
        ("so $\\boxed{5}$", "5"),
        ("first \\boxed{1}, finally \\boxed{\\frac{a}{b^{2}}}.", "\\frac{a}{b^{2}}"),
        ("we get $\\boxed 7$.", "7"),
        ("\\fbox{x+1}", "x+1"),
        ("no box here", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_last_boxed(solution: str, answer: str | None) -> None:
    assert last_boxed(solution) == answer


def test_join_sentences_spacing() -> None:
    assert join_sentences(["A b.", " C d."]) == "A b. C d."  # HotpotQA keeps leading spaces
    assert join_sentences(["A b.", "C d."]) == "A b. C d."  # 2Wiki does not
    assert join_sentences([]) == ""


def test_tasks_are_real_task_objects(tmp_path: Path) -> None:
    [task] = load_tasks(write_jsonl(tmp_path / "t.jsonl", [{"Question": " q ", "Answer": 3.0}]), kind="qa")
    assert isinstance(task, Task)
    assert (task.question, task.answer, task.gold_answers) == ("q", "3", ("3",))
    assert math.isclose(float(task.answer), 3.0)
