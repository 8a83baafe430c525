"""``agentdistill study``: every cell of a study, resumable, then its results (:mod:`.report`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agentdistill.study.settings import StudySettings

SETTINGS_FILENAME = "study_settings.yaml"


def run_study(out: str | Path, settings: StudySettings, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the study ``settings`` describes in ``out`` and write its results; returns ``results.json``.

    The directory is claimed for this study first (:func:`agentdistill.runs.claim_run_directory`): a rerun with
    the same settings resumes, cell by cell; another study's directory or a directory of other files is refused.
    """
    from tqdm.auto import tqdm

    from agentdistill.runs import claim_run_directory
    from agentdistill.study.cells import StudyContext, cells_of, run_cell
    from agentdistill.study.data import collect_teacher_data, initial_students
    from agentdistill.study.report import write_results

    directory = Path(out)
    started = time.perf_counter()
    with claim_run_directory(
        directory, command="study", identity=settings.to_dict(), may_change=frozenset({"wandb_project"})
    ):
        settings.to_yaml(directory / SETTINGS_FILENAME)
        cells = cells_of(settings)
        timings: dict[str, float] = {}
        with tqdm(total=len(cells) + 1, disable=not progress, desc="study", unit="cell") as bar:
            bar.set_postfix_str("teacher data and students")
            data = collect_teacher_data(directory, settings)
            context = StudyContext(directory, settings, data, initial_students(directory, settings, data))
            timings["teacher_and_students_s"] = time.perf_counter() - started
            bar.update(1)
            rows = []
            for cell in cells:
                bar.set_postfix_str(cell.label())
                begun = time.perf_counter()
                rows.extend(run_cell(cell, context))
                timings[cell.label()] = time.perf_counter() - begun
                bar.update(1)
        meta = {"settings": settings.to_dict(), "runtime_seconds": time.perf_counter() - started, "timings_s": timings}
        return write_results(directory, rows, meta)
