"""Loading the paper's benchmarks straight from the Hugging Face hub.

Each task name maps to the hub dataset a user would load for it (:func:`hub_source_for`), and each
row goes through the same converter as a local file of that layout, so hub and local tasks are
interchangeable. ``datasets`` is imported only when a hub load is asked for: most runs (and every
test) read local files, and the import is slow. Where the hub cannot be reached, the error says to
pass a local file instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from agentdistill.envs.data.errors import HubLoadError
from agentdistill.envs.data.formats import FORMATS, PAPER_LIST, TaskKind
from agentdistill.envs.data.records import convert_records
from agentdistill.envs.tasks import Task


@dataclass(frozen=True)
class HubSource:
    """Where a benchmark lives on the hub and how its rows read.

    ``path``/``name``/``split`` are the arguments of ``datasets.load_dataset``; ``extra_names`` are
    further configs of the same dataset whose rows are appended (OlymMATH ships its English problems
    as two configs of 100, easy and hard; the paper's 200 OlymMATH problems are the size of both). ``format`` names the row layout
    (a key of :data:`FORMATS`); ``kind`` is the kind of tasks the rows hold.
    """

    path: str
    name: str | None
    split: str
    kind: TaskKind
    format: str
    extra_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        fmt = FORMATS.get(self.format)
        if fmt is None or fmt is PAPER_LIST:
            known = ", ".join(name for name in FORMATS if name != PAPER_LIST.name)
            raise ValueError(f"HubSource.format must be one of {known}; got {self.format!r}")
        if fmt.kind != self.kind:
            raise ValueError(f"HubSource {self.path!r}: format {self.format!r} holds {fmt.kind} tasks, not {self.kind}")

    @property
    def configs(self) -> tuple[str | None, ...]:
        """Every config to load, in order."""
        return (self.name, *self.extra_names)

    def describe(self) -> str:
        """``"hotpotqa/hotpot_qa (config distractor, split validation)"`` for messages."""
        configs = ", ".join(str(config) for config in self.configs if config is not None)
        return f"{self.path} ({f'config {configs}, ' if configs else ''}split {self.split})"


HUB_SOURCES: Mapping[str, HubSource] = MappingProxyType(
    {
        "HotpotQA": HubSource("hotpotqa/hotpot_qa", "distractor", "validation", "qa", "hotpotqa"),
        "Bamboogle": HubSource("chiayewken/bamboogle", None, "test", "qa", "bamboogle"),
        "MuSiQue": HubSource("dgslibisey/MuSiQue", None, "validation", "qa", "musique"),
        "2WikiMultiHopQA": HubSource("framolfese/2WikiMultihopQA", None, "validation", "qa", "2wikimultihopqa"),
        "MATH": HubSource("DigitalLearningGmbH/MATH-lighteval", "default", "train", "math", "math_solution"),
        "MATH500": HubSource("HuggingFaceH4/MATH-500", None, "test", "math", "math500"),
        "GSMHard": HubSource("reasoning-machines/gsm-hard", None, "train", "math", "gsmhard"),
        "AIME": HubSource("AI-MO/aimo-validation-aime", None, "train", "math", "math500"),
        "OlymMATH": HubSource("RUC-AIBOX/OlymMATH", "en-easy", "test", "math", "math500", ("en-hard",)),
        "GSM8K": HubSource("openai/gsm8k", "main", "test", "math", "gsm8k"),
    }
)


def _normalise(task_name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", task_name.lower())


def hub_source_for(task_name: str) -> HubSource:
    """The hub dataset for a benchmark name (case, spaces, dashes and underscores ignored)."""
    wanted = _normalise(task_name)
    for name, source in HUB_SOURCES.items():
        if _normalise(name) == wanted:
            return source
    raise ValueError(f"no hub dataset known for task {task_name!r}; known tasks: {', '.join(HUB_SOURCES)}")


def load_hub_tasks(source: HubSource, *, limit: int | None = None) -> list[Task]:
    """Load tasks from the hub with ``datasets.load_dataset`` (at most ``limit`` of them).

    Raises :class:`HubLoadError` when ``datasets`` is missing or the hub cannot serve the dataset
    (no network, unknown id), and :class:`DataFormatError` when its rows lack required fields.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if limit == 0:
        return []
    return convert_records(
        _rows(source),
        FORMATS[source.format],
        source=f"hub dataset {source.describe()}",
        id_prefix=f"{source.path.rsplit('/', 1)[-1]}-{source.split}",
        limit=limit,
    )


def _rows(source: HubSource) -> Iterator[Any]:
    """Every row of every config of ``source``, loading each config only when it is reached."""
    try:
        import datasets
    except ImportError as error:
        raise HubLoadError(
            f"loading {source.describe()} from the hub needs the 'datasets' package; install it, "
            f"or pass data_path= with a local file of the same layout"
        ) from error
    for config in source.configs:
        try:
            dataset = datasets.load_dataset(source.path, name=config, split=source.split)
        except Exception as error:  # the hub fails in many ways (network, auth, bad id); all mean the same here
            raise HubLoadError(
                f"could not load {source.describe()} from the Hugging Face hub "
                f"({type(error).__name__}: {error}); without network access, pass data_path= with a "
                f"local file of the same layout (e.g. a JSON Lines export of that dataset)"
            ) from error
        yield from dataset
