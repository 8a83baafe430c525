"""Procedural, seeded task generators: unlimited tasks with no download.

These are the project's "CartPole" environments: small enough for a 2-5M parameter student trained
from scratch on CPU to imitate a scripted expert, yet they exercise the same loop as the real
benchmarks (Thought -> python code calling tools -> Observation).

* :func:`generate_qa_task` -- multi-hop questions over a per-task knowledge base of short documents;
  the plan searches entity names one hop at a time.
* :func:`generate_math_task` -- arithmetic word problems whose plan is a short program printing the answer.

Both are pure functions of their arguments: the same seed always yields the same :class:`Task`.
"""

from __future__ import annotations

from agentdistill.envs.synthetic.math import generate_math_task
from agentdistill.envs.synthetic.qa import generate_qa_task, max_qa_hops

__all__ = ["generate_math_task", "generate_qa_task", "max_qa_hops"]
