"""SFT of students on expert trajectories: assistant-only loss, real tiny runs, a real 2-process CPU launch.

The training data are real expert trajectories (``agentdistill rollout --policy expert`` on the synthetic math
env) without their final observation, as the trajectory converter will produce them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from agentdistill.distill.launch import LaunchOptions
from agentdistill.distill.sft.launch import launch_sft
from agentdistill.distill.sft.masking import assistant_token_mask, has_generation_markers
from agentdistill.distill.sft.settings import SFTResult, SFTSettings
from agentdistill.distill.sft.train import PreparedSFT, prepare_sft, train_sft
from agentdistill.distill.students import CHATML_TEMPLATE, IM_END, TINY, build_student, save_student, train_tokenizer
from agentdistill.policies.base import PolicyRequest, SamplingParams
from agentdistill.policies.hf import HFPolicy

REPO = Path(__file__).resolve().parents[2]
CPU_TINY = REPO / "configs" / "distill" / "sft_cpu_tiny.yaml"

Conversation = list[dict[str, str]]


@pytest.fixture(scope="session")
def conversations(tmp_path_factory: pytest.TempPathFactory) -> list[Conversation]:
    """40 expert math conversations, each ending on the assistant's final_answer turn."""
    from agentdistill.cli import main

    out = tmp_path_factory.mktemp("rollout") / "expert.jsonl"
    argv = ["rollout", "--env", "AgentMath-Synthetic-v0", "--policy", "expert", "--episodes", "40", "--num-envs", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert len(rows) == 40
    result = []
    for row in rows:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        assert messages[-1]["role"] == "user" and messages[-1]["content"].startswith("Observation")
        result.append(messages[:-1])
    return result


@pytest.fixture()
def clean_wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty $HOME and no W&B credentials or directory settings: runs must go offline, under out_dir."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    return home


def cpu_settings(**changes: Any) -> SFTSettings:
    return SFTSettings.from_yaml(CPU_TINY).replace(**changes)


def expected_targets(messages: Conversation) -> list[str]:
    return [message["content"] + IM_END for message in messages if message["role"] == "assistant"]


def trained_segments(tokenizer: Any, input_ids: list[int], trained: list[bool]) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    segments: list[list[int]] = []
    previous = False
    for token, bit in zip(input_ids, trained):
        if bit and not previous:
            segments.append([])
        if bit:
            segments[-1].append(token)
        previous = bit
    return [tokenizer.decode(segment) for segment in segments]


def collated_segments(prepared: PreparedSFT, count: int) -> list[list[str]]:
    """Collate the first ``count`` prepared examples with the trainer's collator; decode what carries loss."""
    trainer = prepared.trainer
    assert not trainer.args.shuffle_dataset  # rows stay in dataset order
    batch = trainer.data_collator([trainer.train_dataset[index] for index in range(count)])
    result = []
    for input_ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        result.append(trained_segments(prepared.tokenizer, input_ids, [label != -100 for label in labels]))
    return result


def generate_once(policy: HFPolicy, messages: Conversation) -> Any:
    request = PolicyRequest(messages=tuple(messages[:2]))
    return policy.generate([request], SamplingParams(max_new_tokens=12, stop=()))[0][0]


# ------------------------------------------------------------------------------------------- (a) the mask


def test_collated_labels_are_exactly_the_assistant_turns(conversations: list[Conversation], tmp_path: Path) -> None:
    data = [{"messages": messages} for messages in conversations[:4]]
    prepared = prepare_sft(data, "scratch:tiny", tmp_path / "out", cpu_settings(max_length=2048))
    assert prepared.masking == "template"  # the scratch template has {% generation %}: TRL's assistant_only_loss
    assert prepared.trainer.args.assistant_only_loss
    for segments, messages in zip(collated_segments(prepared, 4), conversations):
        assert segments == expected_targets(messages)
        joined = "".join(segments)
        assert "<|im_start|>" not in joined and "Observation" not in joined and "Task:" not in joined


def test_hub_qwen25_template_without_markers_is_masked_the_same(
    conversations: list[Conversation], tmp_path: Path
) -> None:
    """Qwen2.5's own template (no generation markers, a default system prompt) through a local model dir."""
    import trl

    qwen_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text(encoding="utf-8")
    texts = [message["content"] for messages in conversations for message in messages]
    tokenizer = train_tokenizer(texts, vocab_size=1024)
    tokenizer.chat_template = qwen_template
    student_dir = tmp_path / "qwen-like"
    save_student(build_student(tokenizer, TINY), tokenizer, student_dir)

    no_system = conversations[1][1:]  # Qwen2.5 then inserts "You are Qwen, created by Alibaba Cloud..."
    rows = [conversations[0], no_system, conversations[2]]
    prepared = prepare_sft(
        [{"messages": m} for m in rows], str(student_dir), tmp_path / "out", cpu_settings(max_length=2048)
    )
    assert prepared.masking == "offsets"
    for segments, messages in zip(collated_segments(prepared, 3), rows):
        assert segments == expected_targets(messages)
        assert "Qwen" not in "".join(segments)


def test_mask_is_the_same_with_and_without_generation_markers(conversations: list[Conversation]) -> None:
    texts = [message["content"] for messages in conversations for message in messages]
    marked = train_tokenizer(texts, vocab_size=1024)
    plain = train_tokenizer(texts, vocab_size=1024)
    plain.chat_template = CHATML_TEMPLATE.replace("{%- generation %}", "").replace("{%- endgeneration %}", "")
    assert has_generation_markers(marked.chat_template) and not has_generation_markers(plain.chat_template)
    for messages in conversations:
        mask = assistant_token_mask(marked, messages)
        assert mask == assistant_token_mask(plain, messages)
        input_ids = marked.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        assert len(mask) == len(input_ids)
        assert trained_segments(marked, input_ids, [bool(bit) for bit in mask]) == expected_targets(messages)


# ------------------------------------------------------------------------------ (b) real tiny SFT runs


def test_full_finetuning_learns_tracks_offline_and_loads(
    conversations: list[Conversation], tmp_path: Path, clean_wandb_env: Path
) -> None:
    out = tmp_path / "full"
    settings = cpu_settings(max_steps=8, wandb_project="agentdistill-test", wandb_samples=2)
    result = train_sft([{"messages": m} for m in conversations], "scratch:tiny", out, settings)

    assert result.global_step == 8 and len(result.losses) == 8 and result.num_examples == 40
    assert sum(result.losses[-3:]) / 3 < sum(result.losses[:3]) / 3 - 0.3, result.losses
    assert result.tokens_per_second and result.tokens_per_second > 0
    assert result.adapter_dir is None and result.model_dir == str(out.resolve())
    assert SFTResult.from_json(out / "sft_result.json") == result
    assert (out / "model.safetensors").is_file() and (out / "base" / "model.safetensors").is_file()

    runs = list((out / "wandb").rglob("offline-run-*"))
    assert runs, "no offline W&B run under out_dir"
    assert list(runs[0].rglob("*.wandb"))
    assert list(runs[0].rglob("sample_conversations*.table.json"))
    assert not any(clean_wandb_env.rglob("*")), f"files written under $HOME: {list(clean_wandb_env.rglob('*'))}"
    assert "WANDB_DIR" not in os.environ  # the run's directory settings do not leak into later runs

    with HFPolicy(out) as policy:
        completion = generate_once(policy, conversations[0])
    assert completion.finish_reason in ("stop", "length") and completion.completion_tokens > 0


def test_lora_learns_and_loads_as_adapter_and_merged(
    conversations: list[Conversation], tmp_path: Path, clean_wandb_env: Path
) -> None:
    out = tmp_path / "lora"
    settings = cpu_settings(
        max_steps=8, lora=True, lora_r=8, lora_alpha=16, learning_rate=5e-3, wandb_project="agentdistill-test"
    )
    result = train_sft([{"messages": m} for m in conversations], "scratch:tiny", out, settings, merge=True)

    assert sum(result.losses[-3:]) / 3 < sum(result.losses[:3]) / 3 - 0.1, result.losses
    assert result.adapter_dir == str(out.resolve()) and result.merged_dir == str(out.resolve() / "merged")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(out.resolve() / "base")
    assert list((out / "wandb").rglob("offline-run-*"))
    assert not any(clean_wandb_env.rglob("*"))

    with HFPolicy(out) as direct:  # transformers loads the recorded base and attaches the adapter
        assert any("lora_" in name for name, _ in direct.model.named_parameters())
        text = generate_once(direct, conversations[0]).text
        ids = torch.tensor([direct.prompt_ids(PolicyRequest(messages=tuple(conversations[0][:2])))])
        adapted_logits = direct.model(ids).logits
    with HFPolicy(result.base_model, adapter=out) as explicit:
        assert generate_once(explicit, conversations[0]).text == text
    with HFPolicy(out / "merged") as merged:
        assert not any("lora_" in name for name, _ in merged.model.named_parameters())
        torch.testing.assert_close(merged.model(ids).logits, adapted_logits, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ (c) two real processes


def test_launch_runs_two_cpu_processes_with_gloo(
    conversations: list[Conversation], tmp_path: Path, clean_wandb_env: Path
) -> None:
    out = tmp_path / "ddp"
    settings = cpu_settings(max_steps=3, wandb_project="agentdistill-test")
    result = launch_sft(
        [{"messages": m} for m in conversations],
        "scratch:tiny",
        out,
        settings=settings,
        options=LaunchOptions(num_processes=2, cpu=True, log_path=tmp_path / "launch.log", timeout=300),
    )
    records = sorted(
        (json.loads(path.read_text()) for path in (out / "ranks").glob("rank-*.json")), key=lambda r: r["rank"]
    )
    assert [r["rank"] for r in records] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in records), records
    assert len({r["pid"] for r in records}) == 2
    assert [r["steps"] for r in records] == [3, 3]
    assert [r["wrote_output"] for r in records] == [True, False]
    assert result.world_size == 2 and result.global_step == 3

    weights = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.safetensors"))
    assert weights == ["base/model.safetensors", "model.safetensors"]  # saved once, by rank 0
    assert len(list((out / "wandb").rglob("offline-run-*"))) == 1
    assert not any(clean_wandb_env.rglob("*"))
    with HFPolicy(out) as policy:
        assert generate_once(policy, conversations[0]).completion_tokens > 0


# --------------------------------------------------------------------------------------- (d) the config


def test_unknown_config_keys_are_rejected_by_name(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("learning_rte: 1.0e-4\nlora_r: 16\n")
    with pytest.raises(ValueError, match=r"learning_rte.*did you mean 'learning_rate'"):
        SFTSettings.from_yaml(config)
    with pytest.raises(ValueError, match="lora_rank"):
        SFTSettings.from_mapping({"lora_rank": 8})
    with pytest.raises(ValueError, match="lora_r"):
        SFTSettings.from_mapping({"lora_r": "many"})
    assert SFTSettings.from_mapping({"learning_rate": "2e-4"}).learning_rate == 2e-4  # YAML 1.1 reads 2e-4 as text


def test_shipped_configs_load() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    paper = SFTSettings.from_yaml(REPO / "configs" / "distill" / "sft_paper.yaml")
    assert paper == SFTSettings(wandb_project=paper.wandb_project)  # the defaults are the paper's
    assert (paper.lora, paper.lora_r, paper.lora_alpha, paper.learning_rate) == (True, 64, 128, 2e-4)
    assert paper.per_device_batch_size * paper.gradient_accumulation_steps == 8
    tiny = SFTSettings.from_yaml(CPU_TINY)
    assert not tiny.lora and tiny.bf16 is False
    names = {path.name: load_config_from_file(str(path)) for path in (REPO / "configs" / "accelerate").glob("*.yaml")}
    assert set(names) == {"ddp.yaml", "fsdp.yaml", "deepspeed_zero1.yaml", "deepspeed_zero3.yaml", "cpu_2proc.yaml"}
    assert names["cpu_2proc.yaml"].use_cpu and names["cpu_2proc.yaml"].num_processes == 2


# ----------------------------------------------------------------------------------------- (e) resuming


def test_rerun_resumes_from_the_last_checkpoint(conversations: list[Conversation], tmp_path: Path) -> None:
    out = tmp_path / "resumable"
    data = [{"messages": m} for m in conversations[:8]]
    first = train_sft(
        data,
        "scratch:tiny",
        out,
        cpu_settings(max_steps=4, save_strategy="steps", save_steps=2, per_device_batch_size=1),
    )
    assert first.resumed_from is None and (out / "checkpoint-4").is_dir()

    second = train_sft(
        data,
        "scratch:tiny",
        out,
        cpu_settings(max_steps=6, save_strategy="steps", save_steps=2, per_device_batch_size=1),
    )
    assert second.resumed_from == str(out.resolve() / "checkpoint-4")
    assert second.global_step == 6
    assert json.loads((out / "ranks" / "rank-0.json").read_text())["steps"] == 2  # only the missing steps ran
    assert second.losses[:4] == first.losses  # the history came back with the checkpoint

    other = [{"messages": m} for m in conversations[8:16]]
    with pytest.raises(ValueError, match="another student or dataset"):
        train_sft(other, "scratch:tiny", out, cpu_settings(max_steps=8))


# ----------------------------------------------------------------------- (f) the full-logits LM head


def test_full_logits_loss_is_the_models_own_causal_lm_loss() -> None:
    from agentdistill.distill.sft.full_logits import next_token_loss_and_metrics

    tokenizer = train_tokenizer(["copy the number 12 into the code", "final_answer(12)"] * 20, vocab_size=300)
    model = build_student(tokenizer, TINY, seed=0)
    input_ids = torch.randint(0, len(tokenizer), (3, 17), generator=torch.Generator().manual_seed(0))
    labels = input_ids.clone()
    labels[:, :5] = -100  # a prompt that carries no loss
    labels[1, 10:] = -100
    outputs = model(input_ids=input_ids, labels=labels)
    loss, entropy_sum, correct, labelled = next_token_loss_and_metrics(outputs.logits, labels, None)
    assert torch.allclose(loss, outputs.loss, atol=1e-6)
    assert labelled.item() == (labels[:, 1:] != -100).sum().item() == 2 * 12 + 5  # positions 5..16, and 5..9 in row 1
    assert 0 <= correct.item() <= labelled.item() and entropy_sum.item() > 0

    total = 2 * labelled.item()  # num_items_in_batch counts the whole accumulated batch: the loss is a share of it
    shared, *_ = next_token_loss_and_metrics(outputs.logits, labels, total)
    assert torch.allclose(shared, outputs.loss / 2, atol=1e-6)


def test_full_logits_head_trains_as_the_fused_head_does(conversations: list[Conversation], tmp_path: Path) -> None:
    from agentdistill.distill.sft.full_logits import FullLogitsSFTTrainer

    data = [{"messages": m} for m in conversations[:8]]
    histories = {}
    for head in ("fused", "full"):
        settings = cpu_settings(max_steps=4, per_device_batch_size=4, lm_head=head)
        prepared = prepare_sft(data, "scratch:tiny", tmp_path / head, settings)
        assert isinstance(prepared.trainer, FullLogitsSFTTrainer) == (head == "full")
        prepared.trainer.train()
        histories[head] = [row for row in prepared.trainer.state.log_history if "loss" in row]
    fused, full = histories["fused"], histories["full"]
    assert len(fused) == len(full) == 4
    for key in ("loss", "entropy", "mean_token_accuracy", "num_tokens"):
        assert [row[key] for row in full] == pytest.approx([row[key] for row in fused], rel=1e-3), key
    assert full[-1]["loss"] < full[0]["loss"]


def test_lm_head_setting_is_checked() -> None:
    with pytest.raises(ValueError, match=r"lm_head must be one of \('fused', 'full'\), got 'tiled'"):
        SFTSettings(lm_head="tiled")
    with pytest.raises(ValueError, match="packing"):
        SFTSettings(lm_head="full", packing=True)


# ------------------------------------------------------------------ (g) output directories of other runs


def _snapshot(directory: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def test_run_sft_refuses_another_runs_directory_before_writing_and_resumes_its_own(
    conversations: list[Conversation], tmp_path: Path
) -> None:
    from datasets import Dataset

    from agentdistill.distill.sft.launch import run_sft
    from agentdistill.errors import OutputConflictError

    out = tmp_path / "student"
    data = Dataset.from_list([{"messages": m} for m in conversations[:8]])
    settings = cpu_settings(max_steps=2, save_strategy="steps", save_steps=2, per_device_batch_size=1)
    first = run_sft(data, "scratch:tiny", out, settings=settings)
    assert first.global_step == 2
    kept = _snapshot(out)
    other_data = Dataset.from_list([{"messages": m} for m in conversations[8:16]])
    for dataset, student, changed, difference in (
        (other_data, "scratch:tiny", settings, "data_sha256: "),
        (data, "scratch:small", settings, "student: 'scratch:tiny' before, 'scratch:small' now"),
        (data, "scratch:tiny", settings.replace(learning_rate=5e-4), "learning_rate: 0.001 before, 0.0005 now"),
    ):
        with pytest.raises(OutputConflictError, match=rf"holds another `agentdistill distill` run \({re.escape(difference)}"):
            run_sft(dataset, student, out, settings=changed)
        assert _snapshot(out) == kept, "nothing of the first run was touched, no sft_data.jsonl rewritten"
    with pytest.raises(OutputConflictError, match=r"holds another `agentdistill distill` run \(data_sha256: "):
        launch_sft(other_data, "scratch:tiny", out, settings=settings, options=LaunchOptions(cpu=True))  # before launching
    assert _snapshot(out) == kept
    # the same run with a larger step budget resumes its own checkpoint
    resumed = run_sft(data, "scratch:tiny", out, settings=settings.replace(max_steps=3))
    assert resumed.resumed_from is not None and resumed.global_step == 3


def test_run_sft_refuses_a_directory_of_other_files(conversations: list[Conversation], tmp_path: Path) -> None:
    from datasets import Dataset

    from agentdistill.distill.sft.launch import run_sft
    from agentdistill.errors import OutputConflictError

    (tmp_path / "thesis.pdf").write_bytes(b"%PDF-1.7")
    with pytest.raises(OutputConflictError, match=r"no agentdistill run wrote here \(thesis.pdf\)"):
        run_sft(Dataset.from_list([{"messages": conversations[0]}]), "scratch:tiny", tmp_path, settings=cpu_settings())
    assert [path.name for path in tmp_path.iterdir()] == ["thesis.pdf"]


def test_checkpointing_keywords_fit_the_installed_and_older_transformers() -> None:
    """transformers 5.23 added `activation_checkpointing`; the versions vLLM pins know only
    `gradient_checkpointing`, and a config built with the new keyword raises TypeError there."""
    import dataclasses

    from trl import GRPOConfig, SFTConfig

    from agentdistill.distill.training import checkpointing_arguments

    @dataclasses.dataclass
    class OlderTrainingArguments:  # the field set of transformers < 5.23, as far as checkpointing goes
        output_dir: str = "x"
        gradient_checkpointing: bool = False

    assert checkpointing_arguments(OlderTrainingArguments, True) == {"gradient_checkpointing": True}
    OlderTrainingArguments(**checkpointing_arguments(OlderTrainingArguments, True))
    for config_class in (SFTConfig, GRPOConfig):
        arguments = checkpointing_arguments(config_class, False)
        names = {entry.name for entry in dataclasses.fields(config_class)}
        assert set(arguments) <= names
