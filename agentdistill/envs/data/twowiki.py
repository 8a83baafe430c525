"""2WikiMultihopQA records: HotpotQA's scheme plus evidence triples.

The original release stores ``context`` as a list; some hub exports store it as the Python repr of
that list (a string), which is parsed with :func:`ast.literal_eval` (never ``eval``). Records are told
apart from HotpotQA by 2Wiki-only fields (``evidences``, ``entity_ids``), its question types, or a
string context, since nothing else separates the two layouts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentdistill.envs.data.hotpotqa import convert_context_record
from agentdistill.envs.tasks import Task

NAME = "2wikimultihopqa"
TITLE = "2WikiMultihopQA"
FIELDS = (
    "{_id|id, question, answer, context: [[title, [sentences]]] (a list or its string repr) "
    "or {title: [...], sentences: [[...]]}, supporting_facts?, evidences?, type?}"
)
_ONLY_2WIKI_FIELDS = ("evidences", "entity_ids", "evidences_id", "answer_id")
_ONLY_2WIKI_TYPES = frozenset({"compositional", "inference", "bridge_comparison"})


def looks_like(record: Mapping[str, Any]) -> bool:
    """A context record that carries a 2Wiki-only field, type, or a serialised context."""
    if "context" not in record or "question" not in record:
        return False
    return (
        any(field in record for field in _ONLY_2WIKI_FIELDS)
        or record.get("type") in _ONLY_2WIKI_TYPES
        or isinstance(record.get("context"), str)
    )


def convert(record: Mapping[str, Any], default_id: str) -> Task:
    """One 2WikiMultihopQA record as a Task whose documents are its context paragraphs."""
    return convert_context_record(record, default_id, format_name=NAME)
