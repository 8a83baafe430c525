"""Seeded multi-hop QA tasks, each with its own tiny knowledge base.

Every task invents a fresh set of entities (films, books, albums, companies, people, bands, cities,
countries, languages) joined by a chain of 1-4 relations, writes one short document per entity, and asks
a question that names only the first entity of the chain. Because the names are drawn anew for every
task, nothing can be memorised across tasks: the answer is reachable only by searching the task's
documents hop by hop, which is exactly the behaviour a distilled student has to learn.

Design choices, each driven by what a tiny from-scratch student can learn:

* Names are short (one or two consonant-vowel syllables, e.g. ``Kemi``, ``Talu``, ``Ran``), so a
  byte-level BPE keeps each as one or two tokens and copying them from observations stays cheap.
* Names never coincide with a template word or an English stopword, so searching a name matches only the
  documents that actually mention that entity.
* A fact is stated only in the document of its subject, and every entity has each relation exactly once,
  so documents never contradict each other.
* Every document type has a single fixed template, so the surface form is consistent across tasks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from agentdistill.envs.tasks import Document, Task

__all__ = [
    "ENTITY_TYPES",
    "NAME_POOL",
    "RELATIONS",
    "Relation",
    "generate_qa_task",
    "max_qa_hops",
]

# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
# Finals for one-syllable names; none of them is a suffix a stemmer strips (s, d, t, y ...).
_CODAS = ("l", "m", "n", "r")

# English function words (a superset of the usual search stopword lists, restricted to what the
# syllable patterns can spell plus common neighbours): a name equal to one would vanish from queries.
_FUNCTION_WORDS = frozenset(
    """
    a about above after again all am an and any are as at be been before being below both but by can
    did do does doing don done down each few for from had has have he her here hers him his how if in
    into is it its just me more most my no nor not now of off on once only or other our ours out over
    own same she so some such than that the their them then there these they this those to too under
    until up very was we were what when where which while who whom why will with won you your yours
    mine none nine one many much must may might lone gone come came make made take took like
    """.split()
)

# Well-known real places that the syllable patterns happen to spell: using them would pit the invented
# facts against a teacher model's world knowledge.
_REAL_PLACES = frozenset(
    """
    baku bata dili gaza goma kano kobe lima lome male mali nara peru pisa pune riga roma rome sana
    suva togo tula
    """.split()
)


@dataclass(frozen=True)
class Relation:
    """A functional relation between two entity types, with the English used to state and ask it.

    ``phrase`` turns the subject's noun phrase into the object's noun phrase (``the director of X``);
    ``question`` asks for the object given the subject's noun phrase. Place relations also carry
    ``country_phrase``/``country_question`` so that a following ``country`` hop folds into one natural
    clause ("In which country was X born?") instead of "the country that the city where X was born is in".
    """

    name: str
    source: str
    target: str
    phrase: str
    question: str
    country_phrase: str = ""
    country_question: str = ""


RELATIONS: tuple[Relation, ...] = (
    Relation("director", "film", "person", "the director of {x}", "Who directed {x}?"),
    Relation("author", "book", "person", "the author of {x}", "Who wrote {x}?"),
    Relation("band", "album", "band", "the band that recorded {x}", "Which band recorded {x}?"),
    Relation("founder", "company", "person", "the founder of {x}", "Who founded {x}?"),
    Relation(
        "headquarters",
        "company",
        "city",
        "the city where {x} is based",
        "In which city is {x} based?",
        country_phrase="the country where {x} is based",
        country_question="In which country is {x} based?",
    ),
    Relation(
        "birthplace",
        "person",
        "city",
        "the city where {x} was born",
        "In which city was {x} born?",
        country_phrase="the country where {x} was born",
        country_question="In which country was {x} born?",
    ),
    Relation(
        "hometown",
        "band",
        "city",
        "the city where {x} was formed",
        "In which city was {x} formed?",
        country_phrase="the country where {x} was formed",
        country_question="In which country was {x} formed?",
    ),
    Relation("country", "city", "country", "the country that {x} is in", "In which country is {x}?"),
    Relation(
        "language",
        "country",
        "language",
        "the language spoken in {x}",
        "What language is spoken in {x}?",
    ),
)

# One fixed template per entity type; every outgoing relation of the type appears in it exactly once.
_DOC_TEMPLATES: Mapping[str, str] = {
    "film": "{name} is a film directed by {director}.",
    "book": "{name} is a book written by {author}.",
    "album": "{name} is an album recorded by the band {band}.",
    "company": "{name} is a company founded by {founder}. It is based in the city of {headquarters}.",
    "person": "{name} is a {occupation} who was born in the city of {birthplace}.",
    "band": "{name} is a band formed in the city of {hometown}.",
    "city": "{name} is a city in the country of {country}.",
    "country": "{name} is a country whose main language is {language}.",
    "language": "{name} is a language.",
}

ENTITY_TYPES: tuple[str, ...] = tuple(_DOC_TEMPLATES)

# How a question names the first entity: its type word, then its name ("the film Voro").
_START_LABELS: Mapping[str, str] = {
    "film": "the film",
    "book": "the book",
    "album": "the album",
    "company": "the company",
    "band": "the band",
    "city": "the city",
    "country": "the country",
    "language": "the language",
}

# A person's occupation follows from the relation that points at them, so a director is never
# described as a chemist; people nothing points at get one of the free occupations.
_ROLE_OCCUPATIONS: Mapping[str, str] = {
    "director": "film director",
    "author": "writer",
    "founder": "business owner",
}
_FREE_OCCUPATIONS: tuple[str, ...] = (
    "film director",
    "writer",
    "business owner",
    "painter",
    "singer",
    "chemist",
    "teacher",
)


def _template_words() -> frozenset[str]:
    """Every lowercase word the QA templates can print, so names can be kept distinct from them."""
    texts = [
        *_DOC_TEMPLATES.values(),
        *_START_LABELS.values(),
        *_ROLE_OCCUPATIONS.values(),
        *_FREE_OCCUPATIONS,
        *(r.phrase for r in RELATIONS),
        *(r.question for r in RELATIONS),
        *(r.country_phrase for r in RELATIONS),
        *(r.country_question for r in RELATIONS),
    ]
    words: set[str] = set()
    for text in texts:
        cleaned = "".join(ch if ch.isalpha() else " " for ch in text.lower())
        words.update(cleaned.split())
    return frozenset(words)


def _stem_prefixes(words: frozenset[str]) -> frozenset[str]:
    """Every prefix of every word (and of its ``y`` -> ``i`` spelling).

    A stemmer only trims or respells endings, so a name that is no such prefix can never share a stem
    with a template word: "Base" would match "based" and "Busi" would match "business" once stemmed.
    """
    spellings = set(words) | {w[:-1] + "i" for w in words if w.endswith("y")}
    return frozenset(w[:k] for w in spellings for k in range(1, len(w) + 1))


def _build_name_pool() -> tuple[str, ...]:
    """All admissible entity names: CV-CV and CVC shapes minus reserved and real-place words."""
    syllables = [c + v for c in _ONSETS for v in _VOWELS]
    candidates = [a + b for a in syllables for b in syllables]
    candidates += [s + c for s in syllables for c in _CODAS]
    banned = _FUNCTION_WORDS | _REAL_PLACES | _stem_prefixes(_template_words())
    return tuple(sorted(name.capitalize() for name in set(candidates) if name not in banned))


NAME_POOL: tuple[str, ...] = _build_name_pool()


class _NameDrawer:
    """Draws distinct names for one task, so that no two entities of a task share a name."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def draw(self) -> str:
        """Return a name not yet used in this task."""
        while True:
            name = self._rng.choice(NAME_POOL)
            if name not in self._used:
                self._used.add(name)
                return name


# --------------------------------------------------------------------------------------------------
# Chains
# --------------------------------------------------------------------------------------------------


def _relations_from(entity_type: str) -> tuple[Relation, ...]:
    """Outgoing relations of an entity type, in the fixed order of :data:`RELATIONS`."""
    return tuple(r for r in RELATIONS if r.source == entity_type)


def _paths(length: int) -> tuple[tuple[Relation, ...], ...]:
    """Every chain of ``length`` composable relations (target of one is source of the next)."""
    paths: list[tuple[Relation, ...]] = [(r,) for r in RELATIONS]
    for _ in range(length - 1):
        paths = [p + (r,) for p in paths for r in _relations_from(p[-1].target)]
    return tuple(paths)


def max_qa_hops() -> int:
    """The longest chain the relation graph allows (the graph is acyclic, so this is finite)."""
    length = 1
    while _paths(length + 1):
        length += 1
    return length


@dataclass(frozen=True)
class _Entity:
    """One entity of a task's knowledge base and the facts its document states."""

    name: str
    type: str
    facts: tuple[tuple[str, str], ...]
    occupation: str = ""

    def document_text(self) -> str:
        """The entity's document, written with its type's single template."""
        return _DOC_TEMPLATES[self.type].format(
            name=self.name, occupation=self.occupation, **dict(self.facts)
        )


def _make_entity(
    name: str,
    entity_type: str,
    names: _NameDrawer,
    rng: random.Random,
    fixed: Mapping[str, str] | None = None,
    occupation: str = "",
) -> _Entity:
    """Build an entity whose relations take the ``fixed`` values where given and fresh names elsewhere."""
    fixed = fixed or {}
    facts = tuple(
        (r.name, fixed[r.name] if r.name in fixed else names.draw())
        for r in _relations_from(entity_type)
    )
    if entity_type == "person" and not occupation:
        occupation = rng.choice(_FREE_OCCUPATIONS)
    return _Entity(name=name, type=entity_type, facts=facts, occupation=occupation)


def _chain_entities(
    path: Sequence[Relation], names: _NameDrawer, rng: random.Random
) -> tuple[_Entity, ...]:
    """The entities along ``path``: entity ``i`` points at entity ``i + 1`` through ``path[i]``."""
    chain_names = [names.draw() for _ in range(len(path) + 1)]
    types = [path[0].source, *(r.target for r in path)]
    entities = []
    for i, (name, entity_type) in enumerate(zip(chain_names, types)):
        fixed = {path[i].name: chain_names[i + 1]} if i < len(path) else {}
        occupation = _ROLE_OCCUPATIONS.get(path[i - 1].name, "") if i > 0 else ""
        entities.append(_make_entity(name, entity_type, names, rng, fixed, occupation))
    return tuple(entities)


def _distractors(
    types: Sequence[str], count: int, names: _NameDrawer, rng: random.Random
) -> tuple[_Entity, ...]:
    """Unrelated entities of the chain's types: same template words as the chain, different facts."""
    cycle = list(dict.fromkeys(types))
    rng.shuffle(cycle)
    return tuple(
        _make_entity(names.draw(), cycle[k % len(cycle)], names, rng) for k in range(count)
    )


# --------------------------------------------------------------------------------------------------
# Question
# --------------------------------------------------------------------------------------------------


def _start_phrase(entity: _Entity) -> str:
    """How the question names the first entity: "the film Voro", "the painter Kemi"."""
    label = f"the {entity.occupation}" if entity.type == "person" else _START_LABELS[entity.type]
    return f"{label} {entity.name}"


def _folds_into_country(path: Sequence[Relation], i: int) -> bool:
    """Whether hop ``i`` is a ``country`` hop right after a place hop, so both read as one clause."""
    return path[i].name == "country" and i > 0 and bool(path[i - 1].country_phrase)


def _subject_phrase(path: Sequence[Relation], start: str) -> str:
    """Noun phrase for the entity reached after all of ``path``, starting from the first entity."""
    phrases = [start]
    for i, relation in enumerate(path):
        if _folds_into_country(path, i):
            phrases.append(path[i - 1].country_phrase.format(x=phrases[i - 1]))
        else:
            phrases.append(relation.phrase.format(x=phrases[i]))
    return phrases[-1]


def _question(path: Sequence[Relation], start: str) -> str:
    """Ask for the last entity of the chain, naming only the first one."""
    last = len(path) - 1
    if _folds_into_country(path, last):
        return path[last - 1].country_question.format(x=_subject_phrase(path[:last - 1], start))
    return path[last].question.format(x=_subject_phrase(path[:last], start))


# --------------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------------


def _plan(chain: Sequence[_Entity], path: Sequence[Relation]) -> tuple[dict[str, Any], ...]:
    """The scripted expert's route: search each entity by name, read the next name, then answer."""
    steps: list[dict[str, Any]] = [
        {
            "action": "search",
            "query": chain[i].name,
            "expect": chain[i + 1].name,
            "relation": relation.name,
            "title": chain[i].name,
        }
        for i, relation in enumerate(path)
    ]
    steps.append({"action": "final_answer", "answer": chain[-1].name})
    return tuple(steps)


def _check_arguments(min_hops: int, max_hops: int, num_distractors: int) -> None:
    """Reject settings the relation graph cannot satisfy, instead of looping or silently clipping."""
    longest = max_qa_hops()
    if not 1 <= min_hops <= max_hops <= longest:
        raise ValueError(f"need 1 <= min_hops <= max_hops <= {longest}, got {min_hops}, {max_hops}")
    if num_distractors < 0:
        raise ValueError(f"num_distractors must be >= 0, got {num_distractors}")


def generate_qa_task(
    seed: int, *, min_hops: int = 2, max_hops: int = 3, num_distractors: int = 8
) -> Task:
    """Build the multi-hop QA task for ``seed``; the same arguments always give the same task.

    The task's documents are its whole knowledge base (chain entities plus ``num_distractors``
    unrelated entities of the same types), shuffled. ``plan`` searches each chain entity by name: that
    name occurs only in its own document and in the document pointing at it, so any lexical search
    returns the needed document among its top two hits.
    """
    _check_arguments(min_hops, max_hops, num_distractors)
    rng = random.Random(seed)
    names = _NameDrawer(rng)
    hops = rng.randint(min_hops, max_hops)
    path = rng.choice(_paths(hops))
    chain = _chain_entities(path, names, rng)
    distractors = _distractors([e.type for e in chain], num_distractors, names, rng)

    entities = list(chain + distractors)
    rng.shuffle(entities)
    task_id = f"synthetic-qa-{seed}"
    documents = tuple(
        Document(title=e.name, text=e.document_text(), doc_id=f"{task_id}/{i}")
        for i, e in enumerate(entities)
    )
    return Task(
        task_id=task_id,
        question=_question(path, _start_phrase(chain[0])),
        answer=chain[-1].name,
        documents=documents,
        plan=_plan(chain, path),
        metadata={
            "generator": "synthetic-qa",
            "seed": seed,
            "hops": hops,
            "relations": tuple(r.name for r in path),
            "entity_types": tuple(e.type for e in chain),
            "chain": tuple(e.name for e in chain),
        },
    )
