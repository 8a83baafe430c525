"""Experiment configs: every configs/paper YAML checks and dry-runs here, with no network, hub or GPU.

Each paper config is dry-run twice: on the shared data (``data_root`` pointed at ../shared/data, so the
benchmark and training envs are really built from local files) and as shipped (hub data: the plan must
say what it would load, and nothing may be fetched). A socket guard fails any connection attempt.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentdistill.experiments import ConfigError, load_experiment, run_experiment
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = sorted((REPO / "configs" / "paper").glob("*.yaml"))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to connect anywhere (hub, model server, retriever) fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a dry run tried to open a connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configs name paths relative to the repository root, where users run them."""
    monkeypatch.chdir(REPO)


def _dry_run(path: Path, overrides: list[str]) -> tuple[Any, str]:
    printed: list[str] = []
    plan = run_experiment(path.relative_to(REPO), dry_run=True, overrides=overrides, write=printed.append)
    return plan, "".join(printed)


PAPER_PROMPTS = SHARED_DATA / "agent-distillation" / "prompts"


def _prompts_override(raw: dict[str, Any], *, data_root_set: bool) -> list[str]:
    """The paper's prompt files are the user's to provide (read from prompts_dir under data_root when set, else
    from the current directory): where no data_root points at them, the test names the shared copy."""
    return [f"prompts_dir={PAPER_PROMPTS}"] if "prompts_dir" in raw and not data_root_set else []


def _kind(path: Path) -> str:
    return str(yaml.safe_load(path.read_text())["kind"])


def test_the_paper_has_a_config_per_experiment() -> None:
    names = {path.name for path in PAPER_CONFIGS}
    assert {"collect_hotpotqa_math.yaml", "collect_hotpotqa_math_ftp.yaml"} <= names
    for size in ("0.5b", "1.5b", "3b", "7b"):
        assert {f"sft_qwen2.5-{size}_lora.yaml", f"sft_qwen2.5-{size}_full.yaml", f"eval_qwen2.5-{size}.yaml",
                f"eval_qwen2.5-{size}_sag.yaml", f"cot_qwen2.5-{size}.yaml", f"cot-rag_qwen2.5-{size}.yaml"} <= names
    assert {_kind(path) for path in PAPER_CONFIGS} >= {"collect", "sft", "eval", "cot"}


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda path: path.stem)
def test_every_paper_config_dry_runs_on_the_shared_data(path: Path, in_repo: None, no_network: None) -> None:
    raw = yaml.safe_load(path.read_text())
    uses_data = "data_root" in raw
    overrides = [f"data_root={SHARED_DATA}"] if uses_data else []
    plan, printed = _dry_run(path, overrides + _prompts_override(raw, data_root_set=uses_data))
    assert plan.steps and "Dry run: the config is valid" in printed
    if uses_data:
        assert str(SHARED_DATA) in printed, "the envs should be built from the local files"
        assert not [need for need in plan.needs if "hub dataset" in need]


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda path: path.stem)
def test_every_paper_config_dry_runs_as_shipped_and_says_what_it_would_load(
    path: Path, in_repo: None, no_network: None
) -> None:
    raw = yaml.safe_load(path.read_text())
    plan, printed = _dry_run(path, _prompts_override(raw, data_root_set=False))
    assert "Needs (not touched by a dry run)" in printed
    if "data_root" in raw:  # tasks from the hub: named, not fetched
        assert any("hub dataset" in need for need in plan.needs), plan.needs
    if "student" in raw or "train" in raw or "vllm:" in path.read_text():  # a Qwen model from the hub
        assert any("Qwen/Qwen2.5-" in need and "Hugging Face hub" in need for need in plan.needs), plan.needs


def test_the_paper_configs_use_the_papers_settings(in_repo: None) -> None:
    lora = load_experiment("configs/paper/sft_qwen2.5-1.5b_lora.yaml").config
    assert lora.student == "Qwen/Qwen2.5-1.5B-Instruct"
    settings = lora.settings
    assert (settings.lora, settings.lora_r, settings.lora_alpha, settings.lora_dropout) == (True, 64, 128, 0.05)
    assert (settings.learning_rate, settings.epochs) == (2e-4, 2.0)
    full = load_experiment("configs/paper/sft_qwen2.5-7b_full.yaml").config
    assert full.settings.lora is False and full.num_processes == 8
    assert full.settings.per_device_batch_size * full.settings.gradient_accumulation_steps * full.num_processes == 8
    sag = load_experiment("configs/paper/eval_qwen2.5-3b_sag.yaml").config
    assert (sag.sag.n, sag.sag.temperature, sag.sag.top_p) == (8, 0.4, 0.8) and sag.suite == "paper"
    assert load_experiment("configs/paper/eval_qwen2.5-3b.yaml").config.sag is None
    teacher = load_experiment("configs/paper/collect_hotpotqa_math_ftp.yaml").config
    assert teacher.policy == "openai:http://localhost:8000/v1#Qwen/Qwen2.5-32B-Instruct"
    assert teacher.ftp is not None and teacher.ftp.build
    assert load_experiment("configs/paper/collect_hotpotqa_math.yaml").config.ftp is None
    assert load_experiment("configs/paper/cot-rag_qwen2.5-0.5b.yaml").config.rag is True


# ------------------------------------------------------------------------------------------- bad configs


def _write(tmp_path: Path, text: str, name: str = "experiment.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


EVAL = """
kind: eval
policy: expert
out: {out}
tasks: [AgentMath-Synthetic-v0]
limit: 2
"""


def test_a_misspelt_sft_setting_is_named_with_the_file_and_the_close_match(tmp_path: Path, in_repo: None) -> None:
    path = _write(tmp_path, """
kind: sft
student: scratch:tiny
out: students/x
trajectories: [t.jsonl]
settings:
  base: configs/distill/sft_cpu_tiny.yaml
  learning_rte: 1.0e-4
""")
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    message = str(caught.value)
    assert str(path) in message and "settings" in message and "'learning_rte'" in message
    assert "did you mean 'learning_rate'" in message


def test_a_misspelt_top_level_key_is_named_with_the_valid_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, EVAL.format(out=tmp_path / "e") + "limt: 3\n")
    expected = r"unknown key\(s\) 'limt' \(did you mean 'limit'\?\).*valid keys: .*num_envs"
    with pytest.raises(ConfigError, match=expected):
        load_experiment(path)


def test_a_misspelt_key_in_a_nested_section_is_named_with_its_path(tmp_path: Path) -> None:
    path = _write(tmp_path, """
kind: collect
policy: expert
out: o
tasks:
  - {env: AgentMath-Synthetic-v0, episodes: 2}
  - {env: AgentQA-Synthetic-v0, episods: 2}
""")
    with pytest.raises(ConfigError, match=r"tasks\[1\]: unknown key\(s\) 'episods' \(did you mean 'episodes'\?\)"):
        load_experiment(path)
    path = _write(tmp_path, EVAL.format(out="o") + "sag: {n: 8, temprature: 0.4}\n")
    with pytest.raises(ConfigError, match=r": sag: unknown key\(s\) 'temprature'.*valid keys: n, temperature, top_p"):
        load_experiment(path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("num_envs: eight", r"num_envs: expected an integer, got a string 'eight'"),
        ("limit: [1, 2]", r"limit: expected an integer or null, got a list"),
        ("prompt_variant: tiny", r"prompt_variant: expected one of 'full', 'short', got 'tiny'"),
        ("sag: {n: many}", r"sag\.n: expected an integer, got a string 'many'"),
        ("sampling: {temperature: hot}", r"sampling\.temperature: expected a number, got a string 'hot'"),
        ("progress: 3", r"progress: expected true or false, got an integer 3"),
        ("sag: {n: 1}", r"sag\.n must be >= 2"),
        ("env_args: [max_steps]", r"env_args: expected a mapping, got a list"),
    ],
)
def test_a_wrong_type_or_value_is_named(tmp_path: Path, line: str, expected: str) -> None:
    text = EVAL.format(out="o")
    key = line.split(":")[0]
    text = "\n".join(row for row in text.splitlines() if not row.startswith(f"{key}:")) + f"\n{line}\n"
    with pytest.raises(ConfigError, match=expected):
        load_experiment(_write(tmp_path, text))


def test_kind_and_required_keys_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kind: unknown kind 'train'; known kinds: collect, sft, eval, cot"):
        load_experiment(_write(tmp_path, "kind: train\nout: o\n"))
    with pytest.raises(ConfigError, match=r"missing key 'kind'"):
        load_experiment(_write(tmp_path, "policy: expert\n"))
    with pytest.raises(ConfigError, match=r"missing required key\(s\) 'policy'"):
        load_experiment(_write(tmp_path, "kind: collect\nout: o\ntasks: [{env: AgentMath-Synthetic-v0}]\n"))
    with pytest.raises(ConfigError, match=r"tasks: expected a list of TaskEntry mappings, got a mapping"):
        load_experiment(_write(tmp_path, "kind: collect\nout: o\npolicy: expert\ntasks: {env: AgentMath-MATH-v0}\n"))
    with pytest.raises(ConfigError, match=r"name the benchmarks: suite"):
        load_experiment(_write(tmp_path, "kind: eval\nout: o\npolicy: expert\n"))


def test_overrides_are_checked_like_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, EVAL.format(out="o"))
    config = load_experiment(path, ["limit=5", "sag={n: 4}", "sampling.max_new_tokens=64"]).config
    assert config.limit == 5 and config.sag.n == 4 and config.sag.temperature == 0.4
    assert config.sampling.max_new_tokens == 64
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'limitt'"):
        load_experiment(path, ["limitt=5"])
    with pytest.raises(ConfigError, match=r"--override 'tasks\.3=x': tasks is a list of 1 items"):
        load_experiment(path, ["tasks.3=x"])
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE"):
        load_experiment(path, ["limit"])


def test_policies_and_their_arguments_are_checked_without_building_them(tmp_path: Path, no_network: None) -> None:
    with pytest.raises(ConfigError, match=r"policy: unknown policy 'gpt4'"):
        run_experiment(_policy_config(tmp_path, "gpt4"), dry_run=True, write=lambda _: None)
    config = _policy_config(tmp_path, "openai:http://127.0.0.1:9/v1#m", "policy_args: {max_concurency: 4}\n")
    with pytest.raises(ConfigError, match=r"policy_args: unknown argument\(s\) 'max_concurency' for a openai policy; "
                       r"valid: .*max_concurrency"):
        run_experiment(config, dry_run=True, write=lambda _: None)
    printed: list[str] = []
    good = _policy_config(tmp_path, "openai:http://127.0.0.1:9/v1#m", "policy_args: {max_concurrency: 4}\n")
    plan = run_experiment(good, dry_run=True, write=printed.append)
    assert any("http://127.0.0.1:9/v1 serving m" in need for need in plan.needs)


def _policy_config(tmp_path: Path, policy: str, extra: str = "") -> Path:
    text = f"kind: eval\npolicy: '{policy}'\nout: {tmp_path / 'o'}\ntasks: [AgentMath-Synthetic-v0]\nlimit: 1\n{extra}"
    return _write(tmp_path, text, "policy.yaml")


def test_data_files_are_resolved_under_data_root(tmp_path: Path, no_network: None) -> None:
    path = _write(tmp_path, f"""
kind: collect
policy: expert
out: {tmp_path / 'o'}
data_root: {SHARED_DATA}
tasks:
  - env: AgentMath-MATH-v0
    episodes: 3
    data: {{data_path: agent-distillation/math_dataset/train/no_such_list.json}}
""")
    with pytest.raises(ConfigError, match=r"tasks\[0\]\.data\.data_path: 'agent-distillation/.*no_such_list\.json' is "
                       r"not under data_root"):
        run_experiment(path, dry_run=True, write=lambda _: None)


def test_a_dry_run_catches_a_qa_list_without_paragraphs_or_retriever(tmp_path: Path, no_network: None) -> None:
    """The paper's HotpotQA training list has questions only: web_search needs the wiki-18 retriever."""
    path = _write(tmp_path, f"""
kind: collect
policy: expert
out: {tmp_path / 'o'}
data_root: {SHARED_DATA}
retriever: null
tasks:
  - env: AgentQA-HotpotQA-v0
    episodes: 3
    data: {{data_path: agent-distillation/qa_dataset/train/hotpotqa_1000_20250402.json}}
""")
    with pytest.raises(ConfigError, match=r"tasks\[0\]: cannot build AgentQA-HotpotQA-v0 .*no context paragraphs"):
        run_experiment(path, dry_run=True, write=lambda _: None)
    plan = run_experiment(path, dry_run=True, overrides=["retriever=http://127.0.0.1:9"], write=lambda _: None)
    assert any("retrieval server at http://127.0.0.1:9" in need for need in plan.needs)


def test_a_retrieval_server_replaces_the_local_stand_in_corpus(tmp_path: Path, no_network: None) -> None:
    from agentdistill.experiments.evaluation import benchmark_kwargs
    from agentdistill.experiments.fields import Location

    kwargs = benchmark_kwargs(
        ["AgentQA-Bamboogle-v0", "AgentMath-AIME-v0"], data_root=str(SHARED_DATA), retriever="http://h:1",
        env_args={"max_steps": 4}, prompt_variant="short", where=Location("x.yaml"),
    )
    bamboogle = kwargs["AgentQA-Bamboogle-v0"]
    assert bamboogle["retriever"] == "http://h:1" and "corpus" not in bamboogle
    assert "retriever" not in kwargs["AgentMath-AIME-v0"] and kwargs["AgentMath-AIME-v0"]["max_steps"] == 4
    bm25 = benchmark_kwargs(["AgentQA-Bamboogle-v0"], data_root=str(SHARED_DATA), retriever="bm25", env_args={},
                            prompt_variant=None, where=Location("x.yaml"))
    assert bm25["AgentQA-Bamboogle-v0"]["corpus"].endswith("flashrag_wiki18_sample_1000.jsonl")


def test_task_entries_and_prefix_files_must_match(tmp_path: Path) -> None:
    base = f"kind: collect\npolicy: expert\nout: {tmp_path / 'o'}\n"
    entry = "{env: AgentMath-Synthetic-v0}"
    with pytest.raises(ConfigError, match=r"share the output name\(s\) AgentMath-Synthetic-v0"):
        load_experiment(_write(tmp_path, base + f"tasks: [{entry}, {entry}]\n"))
    with pytest.raises(ConfigError, match=r"ftp.files must name one prefix file per task entry .*missing: b"):
        load_experiment(_write(tmp_path, base + "tasks: [{env: AgentMath-Synthetic-v0, name: a}, "
                               "{env: AgentMath-Synthetic-v0, name: b}]\nftp: {files: {a: a.json}}\n"))
    with pytest.raises(ConfigError, match=r"ftp needs exactly one of build"):
        load_experiment(_write(tmp_path, base + "tasks: [{env: AgentMath-Synthetic-v0}]\nftp: {}\n"))


def test_the_cli_reports_a_bad_config_and_exits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agentdistill.cli import main

    path = _write(tmp_path, EVAL.format(out="o") + "limt: 3\n")
    assert main(["run", str(path), "--dry-run"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("agentdistill run: ") and "'limt'" in error and error.count("\n") == 1
    assert main(["run", str(_write(tmp_path, EVAL.format(out=tmp_path / "e"), "good.yaml")), "--dry-run"]) == 0
    assert "Dry run: the config is valid" in capsys.readouterr().out
    assert not (tmp_path / "e").exists(), "a dry run writes nothing"


def test_a_nested_section_starts_from_the_default_of_its_context(tmp_path: Path) -> None:
    """A chain-of-thought ``sampling`` given only a temperature keeps the CoT defaults (no CodeAct stop strings)."""
    path = _write(tmp_path, """
kind: cot
out: o
eval: {policy: expert, tasks: [AgentMath-Synthetic-v0], limit: 1, sampling: {temperature: 0.3}}
""")
    sampling = load_experiment(path).config.eval.sampling
    assert (sampling.temperature, sampling.stop, sampling.max_new_tokens) == (0.3, (), 2048)
    agent = load_experiment(_write(tmp_path, EVAL.format(out="o") + "sampling: {temperature: 0.3}\n", "a.yaml"))
    assert agent.config.sampling.stop == ("<end_code>", "Observation:")


def test_every_registered_kind_declares_a_schema_a_plan_and_a_run() -> None:
    import dataclasses

    from agentdistill.experiments.fields import Location
    from agentdistill.experiments.registry import KIND_MODULES, experiment_kind

    for name in KIND_MODULES:
        kind = experiment_kind(name, Location("x.yaml"))
        assert kind.name == name and dataclasses.is_dataclass(kind.schema)
        assert "out" in {field.name for field in dataclasses.fields(kind.schema)}
        assert callable(kind.plan) and callable(kind.run)


def test_a_judge_is_checked_and_named_per_benchmark_by_a_dry_run(tmp_path: Path, no_network: None) -> None:
    prompts = SHARED_DATA / "agent-distillation" / "prompts"
    judge = "openai:http://127.0.0.1:9/v1#gpt-4o-mini"
    config = _write(tmp_path, f"""
kind: eval
policy: expert
out: {tmp_path / 'o'}
data_root: {SHARED_DATA}
tasks: [AgentQA-Bamboogle-v0, AgentMath-MATH500-v0]
limit: 2
judge: '{judge}'
prompts_dir: {prompts}
""")
    printed: list[str] = []
    plan = run_experiment(config, dry_run=True, write=printed.append)
    text = "".join(printed)
    label = f"LLM judge ({judge}, the paper's prompt)"
    assert "AgentQA-Bamboogle-v0: 2 of 125 tasks from local file" in text and f"; metric: {label}" in text
    assert "AgentMath-MATH500-v0: 2 of 500 tasks" in text and "metric: answer equivalence (math-verify)" in text
    assert f"Judge the factual answers into {tmp_path / 'o' / 'judged'}/<env id>.jsonl" in text
    assert any("http://127.0.0.1:9/v1 serving the judge gpt-4o-mini" in need for need in plan.needs)

    with pytest.raises(ConfigError, match=r"judge: unknown policy 'gpt-4o-mini'"):
        run_experiment(config, dry_run=True, overrides=["judge=gpt-4o-mini"], write=lambda _: None)
    with pytest.raises(ConfigError, match=r"prompts_dir: the paper's judge needs prompts_dir=DIR"):
        run_experiment(config, dry_run=True, overrides=["prompts_dir=null"], write=lambda _: None)
    with pytest.raises(ConfigError, match=r"prompts_dir: prompts_dir '.*' lacks code_agent\.yaml"):
        run_experiment(config, dry_run=True, overrides=[f"prompts_dir={tmp_path}"], write=lambda _: None)
    collect = _write(tmp_path, f"""
kind: collect
policy: expert
out: {tmp_path / 'teacher'}
tasks: [{{env: AgentQA-Synthetic-v0, name: qa, episodes: 2}}]
judge: '{judge}'
prompts_dir: {prompts}
""", "collect.yaml")
    printed.clear()
    run_experiment(collect, dry_run=True, write=printed.append)
    assert f"qa: {tmp_path / 'teacher' / 'judged' / 'qa.jsonl'}" in "".join(printed)
    assert "factual episodes scored by the judge's verdict; math keeps its own score" in "".join(printed)


def test_the_paper_eval_lists_its_eight_test_sets_protocol_and_judge(in_repo: None, no_network: None) -> None:
    plan, printed = _dry_run(REPO / "configs/paper/eval_qwen2.5-1.5b_sag.yaml", [f"data_root={SHARED_DATA}"])
    expected = {
        "AgentQA-HotpotQA-v0": 500, "AgentQA-Bamboogle-v0": 125, "AgentQA-MuSiQue-v0": 500,
        "AgentQA-2WikiMultiHopQA-v0": 500, "AgentMath-MATH500-v0": 500, "AgentMath-GSMHard-v0": 500,
        "AgentMath-AIME-v0": 90, "AgentMath-OlymMATH-v0": 200,
    }
    for env_id, count in expected.items():
        line = next(line for line in printed.splitlines() if line.strip().startswith(f"{env_id}:"))
        assert f"{count} of {count} tasks from local file {SHARED_DATA}/agent-distillation/" in line, line
        judged = env_id.startswith("AgentQA-")
        assert ("metric: LLM judge (openai:https://api.openai.com/v1#gpt-4o-mini" in line) == judged, line
    assert f"protocol: paper (the paper's prompts from {PAPER_PROMPTS})" in printed
    assert "vote on logs" in printed
