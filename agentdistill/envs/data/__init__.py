"""Task data: local files and Hugging Face hub datasets turned into :class:`~agentdistill.envs.tasks.Task` lists.

Environments never parse data themselves; they receive tasks from here, so supporting a new layout
means adding one converter module, not touching env code.

* :func:`load_tasks` reads one local file and recognises its layout from the content, not the file
  name: the paper's question lists (``{"metadata", "examples"}``), HotpotQA (Hugging Face and
  original layouts), MuSiQue, 2WikiMultihopQA (context as a list or its string repr), GSM8K,
  MATH-500 / AIME / OlymMATH, Hendrycks MATH, GSM-Hard and Bamboogle, as JSON lists or JSON Lines.
  Context paragraphs become ``Task.documents``, which QA envs pool into their retrieval corpus.
* :func:`load_hub_tasks` loads the same layouts from the hub; :func:`hub_source_for` names the hub
  dataset each of the paper's benchmarks comes from. Without network access, pass a local file.

A bad file fails with :class:`DataFormatError`, whose message names the file, the record, the
missing fields and the layouts that were expected; a missing file with ``FileNotFoundError``.
"""

from __future__ import annotations

from agentdistill.envs.data.errors import DataFormatError, HubLoadError, SkippedRecordsWarning
from agentdistill.envs.data.formats import FORMATS, TaskKind
from agentdistill.envs.data.hub import HUB_SOURCES, HubSource, hub_source_for, load_hub_tasks
from agentdistill.envs.data.local import load_tasks

__all__ = [
    "FORMATS",
    "HUB_SOURCES",
    "DataFormatError",
    "HubLoadError",
    "HubSource",
    "SkippedRecordsWarning",
    "TaskKind",
    "hub_source_for",
    "load_hub_tasks",
    "load_tasks",
]
