"""The paragraph layouts HotpotQA and 2WikiMultihopQA share, in all the shapes they ship in.

The same ``context`` field appears as the Hugging Face struct ``{"title": [...], "sentences":
[[...]]}``, as the original release's ``[[title, [sentences]]]`` and, in some hub exports of
2WikiMultihopQA, as the Python repr of that list. All three become ``(title, sentences)`` pairs here,
so the per-dataset converters only decide what the pairs mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdistill.envs.data.errors import RecordProblem
from agentdistill.envs.data.fields import literal_value
from agentdistill.envs.tasks import Document


def parse_context(value: Any, field: str = "context") -> list[tuple[str, list[str]]]:
    """``(title, sentences)`` pairs from any of the three context layouts."""
    parsed = literal_value(value, field)
    if isinstance(parsed, Mapping):
        return _from_columns(parsed, field)
    if isinstance(parsed, (list, tuple)):
        return [_from_pair(item, field, position) for position, item in enumerate(parsed)]
    raise RecordProblem(
        f"field {field!r} must be {{'title': [...], 'sentences': [[...]]}} or [[title, [sentences]]], "
        f"got {type(parsed).__name__}"
    )


def join_sentences(sentences: list[str]) -> str:
    """One paragraph from its sentences.

    HotpotQA keeps each sentence's leading space (``" They play..."``) while 2Wiki does not, so a space
    is added only where neither side of the seam already has whitespace.
    """
    paragraph = ""
    for sentence in sentences:
        if paragraph and sentence and not paragraph[-1].isspace() and not sentence[0].isspace():
            paragraph += " "
        paragraph += sentence
    return paragraph.strip()


def context_documents(pairs: list[tuple[str, list[str]]]) -> tuple[Document, ...]:
    """One :class:`Document` per context paragraph; the title is its id (one paragraph per article)."""
    return tuple(Document(title=title, text=join_sentences(sentences), doc_id=title) for title, sentences in pairs)


def supporting_facts(value: Any, field: str = "supporting_facts") -> tuple[tuple[str, int], ...]:
    """``(title, sentence index)`` pairs from the struct, list or string layout; absent is empty."""
    if value is None:
        return ()
    parsed = literal_value(value, field)
    if isinstance(parsed, Mapping):
        titles, sent_ids = parsed.get("title"), parsed.get("sent_id")
        if not isinstance(titles, list) or not isinstance(sent_ids, list) or len(titles) != len(sent_ids):
            raise RecordProblem(f"field {field!r} must hold equally long 'title' and 'sent_id' lists")
        return tuple((str(title), _index(sent_id, field)) for title, sent_id in zip(titles, sent_ids))
    if isinstance(parsed, (list, tuple)):
        facts = []
        for item in parsed:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise RecordProblem(f"field {field!r} must be a list of [title, sentence index] pairs")
            facts.append((str(item[0]), _index(item[1], field)))
        return tuple(facts)
    raise RecordProblem(f"field {field!r} must be a list or a {{'title', 'sent_id'}} struct")


def unique_titles(facts: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    """The supporting paragraphs' titles (= doc ids), first occurrence order, no repeats."""
    return tuple(dict.fromkeys(title for title, _ in facts))


def _index(value: Any, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise RecordProblem(f"field {field!r}: sentence index {value!r} is not an integer") from error


def _from_columns(columns: Mapping[str, Any], field: str) -> list[tuple[str, list[str]]]:
    titles, sentences = columns.get("title"), columns.get("sentences")
    if not isinstance(titles, list) or not isinstance(sentences, list):
        raise RecordProblem(f"field {field!r} must hold 'title' and 'sentences' lists", missing=(field,))
    if len(titles) != len(sentences):
        raise RecordProblem(
            f"field {field!r} has {len(titles)} titles but {len(sentences)} sentence lists"
        )
    return [(str(title), _sentences(group, field)) for title, group in zip(titles, sentences)]


def _from_pair(item: Any, field: str, position: int) -> tuple[str, list[str]]:
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        raise RecordProblem(f"field {field!r}: paragraph {position} must be a [title, [sentences]] pair")
    return str(item[0]), _sentences(item[1], field)


def _sentences(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise RecordProblem(f"field {field!r}: sentences must be a list of strings")
    return [str(sentence) for sentence in value]
