"""What every experiment kind resolves and checks before it runs: env arguments, data files, envs, policies.

These are the checks a dry run makes, and a real run makes them too (through the plan), so a config that
passes ``--dry-run`` fails later only for reasons outside this machine (a server down, a GPU missing).
Nothing here loads a model, opens a connection or reads the hub: an env is built only when its tasks are
local (a ``data_path``, or a synthetic env) and its retriever needs no model (BM25, or a server URL, whose
client connects only on the first search); otherwise the plan says what the run would load.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agentdistill.envs.registration import ENV_ENTRIES, EnvEntry, domain_of, env_entry_for
from agentdistill.experiments.fields import Location
from agentdistill.experiments.plan import Plan
from agentdistill.experiments.schema import TaskEntry
from agentdistill.policies import PolicySpec, parse_policy_spec, policy_backend
from agentdistill.settings import StrictSettings

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
"""``name`` or ``org/name``: what a Hugging Face hub id looks like (a longer path is a local directory)."""


# --------------------------------------------------------------------------------------------- env arguments


def env_entry(env_id: str, where: Location) -> EnvEntry:
    """The registration of ``env_id``; an unknown id is an error listing the known ones."""
    for entry in ENV_ENTRIES:
        if entry.env_id == env_id:
            return entry
    raise where.error(f"unknown env id {env_id!r}; known ids: {', '.join(entry.env_id for entry in ENV_ENTRIES)}")


def resolve_data(data: Mapping[str, str], data_root: str | None, where: Location) -> dict[str, str]:
    """``data``'s files as paths under ``data_root`` (nothing without a root); a missing file is an error."""
    if data_root is None:
        return {}
    root = Path(data_root)
    if not root.is_dir():
        raise where.error(f"data_root {data_root!r} is not a directory")
    resolved = {}
    for key, relative in data.items():
        path = root / relative
        if not path.exists():
            raise where.child(key).error(f"{relative!r} is not under data_root {data_root!r} (looked for {path})")
        resolved[key] = str(path)
    return resolved


def is_factual(env_id: str) -> bool:
    """QA envs search; math envs do not (the retriever setting and RAG apply to QA envs only)."""
    return domain_of(env_id) == "factual"


def with_retriever(env_id: str, kwargs: Mapping[str, Any], retriever: str | None) -> dict[str, Any]:
    """``kwargs`` plus the experiment's retriever for a QA env.

    A retriever that brings its own documents (an index directory or a server, e.g. the paper's wiki-18
    index) replaces a local stand-in ``corpus`` (the env refuses both at once); ``"bm25"`` / ``"dense"``
    search the env's corpus and keep it.
    """
    from agentdistill.envs.tools.retrieval.factory import uses_env_corpus

    result = dict(kwargs)
    searches = is_factual(env_id) or result.get("protocol") == "paper"  # the paper's math agents search too
    if retriever is None or not searches or "retriever" in result:
        return result
    result["retriever"] = retriever
    if not uses_env_corpus(retriever):
        result.pop("corpus", None)
    return result


def entry_env_kwargs(
    entry: TaskEntry, *, data_root: str | None, retriever: str | None, where: Location
) -> dict[str, Any]:
    """Constructor arguments of a task entry's env: its local files, its ``env_args``, the retriever."""
    env_entry(entry.env, where.child("env"))
    kwargs = {**resolve_data(entry.data, data_root, where.child("data")), **entry.env_args}
    return with_retriever(entry.env, kwargs, retriever)


def from_hub(env_id: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether the env would load its tasks from the Hugging Face hub (a benchmark env without ``data_path``)."""
    entry = next((entry for entry in ENV_ENTRIES if entry.env_id == env_id), None)
    return entry is not None and "task_name" in entry.kwargs and "data_path" not in kwargs


def entry_start(entry: TaskEntry, hub: bool) -> int:
    return entry.hub_start if hub and entry.hub_start is not None else entry.start


# ------------------------------------------------------------------------------------------------ env probes


@dataclass(frozen=True)
class EnvProbe:
    """What a dry run learnt about an env: how many tasks (``None``: unlimited, or unknown before loading
    the hub), where they come from, and whether the env was really built here."""

    env_id: str
    num_tasks: int | None
    source: str
    hub: bool
    built: bool


def probe_env(env_id: str, kwargs: Mapping[str, Any], where: Location, plan: Plan) -> EnvProbe:
    """Build the env when that needs nothing from outside this machine; otherwise describe what it would load."""
    entry = env_entry(env_id, where)
    task_name = entry.kwargs.get("task_name")
    retriever = kwargs.get("retriever")
    if isinstance(retriever, str) and retriever.startswith(("http://", "https://")):
        plan.need(f"a retrieval server at {retriever} (agentdistill serve-retriever, or any Search-R1 server)")
    if from_hub(env_id, kwargs):
        from agentdistill.envs.data import hub_source_for

        source = hub_source_for(str(task_name))
        if kwargs.get("split") is not None:
            source = dataclasses.replace(source, split=str(kwargs["split"]))
        plan.need(f"the hub dataset {source.describe()} for {env_id} (or data_root with local files)")
        return EnvProbe(env_id, None, f"hub dataset {source.describe()}", hub=True, built=False)
    if retriever == "dense" or (isinstance(retriever, (str, os.PathLike)) and Path(retriever).is_dir()):
        plan.need(f"the query encoder of retriever={retriever!r} for {env_id} (a sentence-transformers model)")
        return _count_without_building(env_id, str(task_name), kwargs, where)
    return _build(env_id, kwargs, where)


def _build(env_id: str, kwargs: Mapping[str, Any], where: Location) -> EnvProbe:
    import gymnasium as gym

    import agentdistill  # noqa: F401 - registers the env ids

    try:
        env = gym.make(env_id, **kwargs)
    except Exception as error:  # noqa: BLE001 - any failure to build is a config problem to report here
        raise where.error(f"cannot build {env_id} with {dict(kwargs)}: {type(error).__name__}: {error}") from error
    try:
        num_tasks = env.unwrapped.num_tasks
    finally:
        env.close()
    source = f"local file {kwargs['data_path']}" if "data_path" in kwargs else "generated tasks"
    return EnvProbe(env_id, num_tasks, source, hub=False, built=True)


def _count_without_building(env_id: str, task_name: str, kwargs: Mapping[str, Any], where: Location) -> EnvProbe:
    from agentdistill.envs.data import load_tasks

    kind = "qa" if is_factual(env_id) else "math"
    try:
        count = len(load_tasks(kwargs["data_path"], kind=kind))
    except Exception as error:  # noqa: BLE001 - an unreadable data file is a config problem
        raise where.error(f"cannot read the tasks of {env_id} from {kwargs['data_path']}: {error}") from error
    return EnvProbe(env_id, count, f"local file {kwargs['data_path']} ({task_name})", hub=False, built=False)


def entry_tasks(entry: TaskEntry, probe: EnvProbe, plan: Plan, where: Location) -> range | None:
    """The task indices of an entry (``None``: all of a hub split, whose size is known only once loaded);
    a split smaller than ``episodes`` gives fewer, with a warning."""
    from agentdistill.rollouts.collect import task_range

    start = entry_start(entry, probe.hub)
    if probe.hub and entry.episodes is None:
        return None
    try:
        tasks = task_range(probe.num_tasks, start=start, episodes=entry.episodes, env_id=entry.env, clip=True)
    except ValueError as error:
        raise where.error(str(error)) from None
    if entry.episodes is not None and len(tasks) < entry.episodes:
        plan.warn(f"{entry.label}: {entry.env} holds {len(tasks)} tasks from index {start} on, fewer than "
                  f"episodes: {entry.episodes}; all of them run")
    return tasks


def describe_range(probe: EnvProbe, tasks: range) -> str:
    total = "unlimited" if probe.num_tasks is None and not probe.hub else (
        "size known once loaded" if probe.num_tasks is None else f"of {probe.num_tasks}"
    )
    return f"{probe.env_id}: tasks {tasks.start}..{tasks.stop - 1} ({len(tasks)} episodes, {total}) from {probe.source}"


# ------------------------------------------------------------------------------------------------- policies


def check_policy(spec: str, policy_args: Mapping[str, Any], plan: Plan, where: Location) -> PolicySpec:
    """Parse ``spec``, check ``policy_args`` against the policy's constructor, and note what it needs."""
    try:
        parsed = parse_policy_spec(spec)
    except ValueError as error:
        raise where.child("policy").error(str(error)) from None
    _check_policy_args(parsed, policy_args, where.child("policy_args"))
    if parsed.kind == "vllm":
        plan.need("a CUDA GPU with vLLM installed (pip install -e '.[vllm]')")
    if parsed.kind == "openai":
        plan.need(
            f"an OpenAI-compatible server at {parsed.base_url} serving {parsed.model} "
            f"(e.g. vllm serve {parsed.model} --port {_port(parsed.base_url)})"
        )
    if parsed.kind in ("hf", "vllm"):
        check_model(parsed.model, plan, what="model")
        if parsed.adapter is not None:
            check_model(parsed.adapter, plan, what="adapter")
    return parsed


def check_model(name: str, plan: Plan, *, what: str) -> str:
    """Where a model (or adapter) comes from: a local directory, the hub, or a directory not written yet."""
    if name.startswith("scratch:"):
        return f"{what} {name} (built from scratch here)"
    if Path(name).exists():
        return f"{what} {name} (local)"
    if _HUB_ID.match(name) and not name.startswith((".", "/")):
        plan.need(f"the {what} {name} from the Hugging Face hub (or a local copy)")
        return f"{what} {name} (hub)"
    plan.warn(f"the {what} {name} does not exist yet (an earlier experiment writes it)")
    return f"{what} {name} (not there yet)"


def describe_policy(parsed: PolicySpec) -> str:
    if parsed.kind == "expert":
        return f"scripted expert (error rate {parsed.error_rate:g}; solves the synthetic envs only)"
    if parsed.kind == "openai":
        return f"{parsed.model} behind {parsed.base_url}"
    adapter = f" with adapter {parsed.adapter}" if parsed.adapter else ""
    return f"{parsed.kind}: {parsed.model}{adapter}"


def warn_if_expert_on_benchmarks(parsed: PolicySpec, env_ids: list[str], plan: Plan) -> None:
    """The scripted expert needs the synthetic generator's plan: on a benchmark every episode fails."""
    benchmarks = [env_id for env_id in env_ids if not env_entry_for(env_id).synthetic]
    if parsed.kind == "expert" and benchmarks:
        plan.warn(f"the scripted expert cannot solve {', '.join(benchmarks)}: its episodes there will fail")


def _check_policy_args(parsed: PolicySpec, policy_args: Mapping[str, Any], where: Location) -> None:
    if not policy_args:
        return
    backend = policy_backend(parsed.kind)
    parameters = inspect.signature(backend.load_builder()).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return  # e.g. vLLM engine arguments: checked by vLLM itself
    valid = sorted(name for name in parameters if name not in backend.spec_arguments)
    unknown = sorted(set(policy_args) - set(valid))
    if unknown:
        raise where.error(
            f"unknown argument(s) {', '.join(repr(name) for name in unknown)} for a {parsed.kind} policy; "
            f"valid: {', '.join(valid)}"
        )


def _port(url: str | None) -> str:
    from urllib.parse import urlsplit

    port = urlsplit(url or "").port
    return str(port) if port is not None else "8000"


# ---------------------------------------------------------------------------------------------------- files


def check_file(path: str, where: Location, *, what: str) -> Path:
    """``path`` must be an existing file (an accelerate config, an SFT settings file, a prefix file)."""
    if not Path(path).is_file():
        raise where.error(f"{what} {path!r} does not exist (relative paths are read from {os.getcwd()})")
    return Path(path)


def count_records(path: str | os.PathLike[str]) -> int:
    """Non-empty lines of a JSON Lines file (0 when it does not exist): what a resumed run will skip."""
    file = Path(path)
    if not file.is_file():
        return 0
    with file.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


SettingsT = TypeVar("SettingsT", bound=StrictSettings)


def settings_converter(settings_class: type[SettingsT]) -> Callable[[Any, Location], SettingsT]:
    """A field converter (``metadata={CONVERT: ...}``) for a training section's settings: a YAML path, or a
    mapping of settings with an optional ``base`` path it overrides; every key is checked by ``settings_class``."""
    what = f"{settings_class.settings_name} settings"

    def read(path: Any, where: Location) -> SettingsT:
        if not isinstance(path, str):
            raise where.error(f"expected a path to a {what} YAML, got {path!r}")
        check_file(path, where, what=f"{what} file")
        try:
            return settings_class.from_yaml(path)
        except ValueError as error:
            raise where.error(str(error)) from None

    def convert(value: Any, where: Location) -> SettingsT:
        if isinstance(value, str):
            return read(value, where)
        if not isinstance(value, Mapping):
            raise where.error(f"expected a path to a {what} YAML or a mapping of {what}, got {value!r}")
        base = read(value["base"], where.child("base")) if value.get("base") is not None else settings_class()
        try:
            return base.replace(**{key: item for key, item in value.items() if key != "base"})
        except ValueError as error:
            raise where.error(str(error)) from None

    return convert
