"""Tests of :mod:`agentdistill.policies.hf` and :mod:`agentdistill.distill.students` on tiny scratch students.

Everything is built here, in seconds, from real text in the shared data folder (read in place): a byte-level
BPE tokenizer and a 2-layer Qwen2 student. To have a model whose output is known, the ``trained`` student is
fitted for a few dozen steps on one ChatML conversation whose answer is a CodeAct action; afterwards its greedy
continuation of that prompt is that action (``<end_code>`` included, then ``<|im_end|>``), which is what the
stop-string tests rely on. The ``random`` student (untrained) is used where diverse samples are wanted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from agentdistill.distill.students import (
    SMALL,
    TINY,
    build_student,
    count_parameters,
    save_student,
    train_tokenizer,
)
from agentdistill.envs.codeact import END_CODE
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.hf import MIN_SHARED_PREFIX, HFPolicy, shared_prefix_length

QUESTION = "What is 12 * 7?"
ACTION = "Thought: I will compute it.\n```py\nprint(12 * 7)\n```" + END_CODE
TRAIN_STEPS = 50


def _corpus(shared_data: Path) -> list[str]:
    """Math word problems and multi-hop questions (numbers and entity names), plus the CodeAct action."""
    texts: list[str] = []
    with open(shared_data / "math" / "gsm8k_test_1319.jsonl", encoding="utf-8") as handle:
        texts += [json.loads(line)["question"] for _, line in zip(range(300), handle)]
    with open(shared_data / "hotpotqa" / "distractor_dev_300_hf.jsonl", encoding="utf-8") as handle:
        texts += [json.loads(line)["question"] for _, line in zip(range(200), handle)]
    return texts + [ACTION] * 20


def _ask(question: str = QUESTION, *history: dict[str, str]) -> PolicyRequest:
    return PolicyRequest(messages=(*history, {"role": "user", "content": question}))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Run the tiny models on one thread: their ops are too small to gain from more, and on a shared 2-core
    machine torch's worker threads waiting on a busy core made this file 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> list[str]:
    return _corpus(shared_data)


@pytest.fixture(scope="module")
def tokenizer(corpus: list[str]) -> Any:
    return train_tokenizer(corpus, vocab_size=2000)


@pytest.fixture(scope="module")
def trained(tokenizer: Any) -> Qwen2ForCausalLM:
    """TINY student fitted on one conversation, so that its greedy answer to QUESTION is ACTION."""
    model = build_student(tokenizer, TINY, seed=0)
    conversation = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ACTION}]
    ids = torch.tensor([tokenizer.apply_chat_template(conversation)["input_ids"]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(TRAIN_STEPS):
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def student_dir(trained: Qwen2ForCausalLM, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("student")
    save_student(trained, tokenizer, out_dir)
    return out_dir


@pytest.fixture(scope="module")
def policy(trained: Qwen2ForCausalLM, tokenizer: Any) -> Iterator[HFPolicy]:
    with HFPolicy(trained, tokenizer=tokenizer) as hf_policy:
        yield hf_policy


def _mixed_requests() -> list[PolicyRequest]:
    """Prompts of quite different lengths, one continuing a partial assistant turn."""
    return [
        _ask(),
        _ask("Hi"),
        _ask(QUESTION, {"role": "system", "content": "You solve problems with code. Numbers: 3 5 8 13 21 34."}),
        PolicyRequest(messages=({"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Thought: I"})),
        _ask("Which magazine was started first, Arthur's Magazine or First for Women?"),
    ]


# --- tokenizer and student -------------------------------------------------------------------------------


def test_tokenizer_reloads_identically_through_auto_tokenizer(
    tokenizer: Any, student_dir: Path, corpus: list[str]
) -> None:
    reloaded = AutoTokenizer.from_pretrained(student_dir)
    samples = corpus[:50] + [
        ACTION,
        "  two  spaces\t\ttabs\r\n and I'LL can't 3.14159 ",
        "Unicode: café Ñandú 日本語 ﬁ e\u0301",
        "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
        "x = 1234567890\nprint(x)" + END_CODE + "Observation:",
    ]
    for text in samples:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"], text
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Thought: I"}]
    assert (
        reloaded.apply_chat_template(messages, continue_final_message=True)["input_ids"]
        == (tokenizer.apply_chat_template(messages, continue_final_message=True)["input_ids"])
    )
    assert (reloaded.eos_token, reloaded.pad_token) == (tokenizer.eos_token, tokenizer.pad_token)


def test_tokenizer_splits_digits_and_keeps_end_code_as_one_text_token(tokenizer: Any) -> None:
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("in 1998, 20451 people")["input_ids"])
    assert all(len(token.lstrip("Ġ")) == 1 for token in tokens if any(ch.isdigit() for ch in token))
    assert [token for token in tokens if token.isdigit()] == list("199820451")
    end_code_ids = tokenizer(END_CODE)["input_ids"]
    assert len(end_code_ids) == 1
    assert end_code_ids[0] not in tokenizer.all_special_ids
    assert tokenizer.decode(tokenizer(ACTION)["input_ids"], skip_special_tokens=True) == ACTION
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_chat_template_renders_chatml(tokenizer: Any) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U 1"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU 1<|im_end|>\n<|im_start|>assistant\n"
    )
    partial = [*messages, {"role": "assistant", "content": "Thought: I "}]
    assert tokenizer.apply_chat_template(partial, tokenize=False, continue_final_message=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU 1<|im_end|>\n<|im_start|>assistant\nThought: I "
    )
    full = tokenizer.apply_chat_template(partial, tokenize=False)
    assert full.endswith("<|im_start|>assistant\nThought: I <|im_end|>\n")
    mask = tokenizer.apply_chat_template(partial, return_assistant_tokens_mask=True)["assistant_masks"]
    assert sum(mask) == len(tokenizer("Thought: I <|im_end|>")["input_ids"])


def test_saved_student_reloads_identically(trained: Qwen2ForCausalLM, tokenizer: Any, student_dir: Path) -> None:
    reloaded = AutoModelForCausalLM.from_pretrained(student_dir)
    ids = torch.tensor([tokenizer(ACTION)["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(reloaded(ids).logits, trained(ids).logits)
    assert reloaded.generation_config.eos_token_id == [tokenizer.eos_token_id, tokenizer.pad_token_id]


def test_preset_sizes(tokenizer: Any) -> None:
    assert 0.5e6 <= count_parameters(build_student(tokenizer, TINY)) <= 2e6
    assert torch.equal(
        build_student(tokenizer, TINY, seed=3).lm_head.weight, build_student(tokenizer, TINY, seed=3).lm_head.weight
    )
    with torch.device("meta"):  # shapes only: counting SMALL's parameters needs no memory or init time
        small = Qwen2ForCausalLM(SMALL.to_qwen2_config(8192))
    assert 20e6 <= count_parameters(small) <= 30e6


# --- policy ----------------------------------------------------------------------------------------------


def test_greedy_answer_stops_on_end_code_and_restores_it(policy: HFPolicy, tokenizer: Any) -> None:
    [[completion]] = policy.generate([_ask()], SamplingParams(max_new_tokens=60))
    assert completion.finish_reason == "stop"
    assert completion.text == ACTION
    end_code_id = tokenizer.convert_tokens_to_ids(END_CODE)
    assert completion.token_ids is not None and completion.token_ids[-1] == end_code_id
    assert tokenizer.decode(completion.token_ids) == ACTION
    assert completion.completion_tokens == len(completion.token_ids)
    assert completion.prompt_token_ids == tuple(
        tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True)["input_ids"]
    )
    assert completion.prompt_tokens == len(completion.prompt_token_ids)


def test_without_stop_strings_the_end_token_ends_the_turn(policy: HFPolicy, tokenizer: Any) -> None:
    [[completion]] = policy.generate([_ask()], SamplingParams(max_new_tokens=60, stop=()))
    assert completion.finish_reason == "stop"
    assert completion.text == ACTION  # <|im_end|> is cut from the text ...
    assert completion.token_ids is not None and completion.token_ids[-1] == tokenizer.eos_token_id  # ... not the ids


def test_other_stop_string_cuts_text_without_restoring_end_code(policy: HFPolicy, tokenizer: Any) -> None:
    [[completion]] = policy.generate([_ask()], SamplingParams(max_new_tokens=60, stop=("print", END_CODE)))
    assert completion.finish_reason == "stop"
    assert completion.text == "Thought: I will compute it.\n```py\n"
    assert completion.token_ids is not None
    assert tokenizer.decode(completion.token_ids).endswith("print")  # ids run through the stop's last token
    assert "print" not in tokenizer.decode(completion.token_ids[:-1])


def test_length_limit(policy: HFPolicy) -> None:
    [[completion]] = policy.generate([_ask()], SamplingParams(max_new_tokens=5))
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 5
    assert ACTION.startswith(completion.text) and completion.text


def test_continuing_a_partial_assistant_message(policy: HFPolicy, tokenizer: Any) -> None:
    partial = "Thought: I will"
    request = PolicyRequest(messages=({"role": "user", "content": QUESTION}, {"role": "assistant", "content": partial}))
    [[completion]] = policy.generate([request], SamplingParams(max_new_tokens=60))
    assert completion.prompt_token_ids is not None
    prompt = tokenizer.decode(completion.prompt_token_ids)
    assert prompt.endswith("<|im_start|>assistant\n" + partial)  # left open: no <|im_end|> after the partial turn
    assert completion.text == ACTION.removeprefix(partial)  # only the continuation


def test_batched_greedy_equals_one_at_a_time(trained: Qwen2ForCausalLM, tokenizer: Any) -> None:
    """Left padding must not change greedy outputs; neither must splitting a call into chunks."""
    requests = _mixed_requests()
    params = SamplingParams(max_new_tokens=24, stop=())
    batched = HFPolicy(trained, tokenizer=tokenizer).generate(requests, params)
    chunked = HFPolicy(trained, tokenizer=tokenizer, max_batch_size=2).generate(requests, params)
    single_policy = HFPolicy(trained, tokenizer=tokenizer, max_batch_size=1)
    singles = [single_policy.generate([request], params)[0] for request in requests]
    assert len({len(completions[0].prompt_token_ids or ()) for completions in singles}) == len(requests)
    for together, in_chunks, alone in zip(batched, chunked, singles):
        for completion in (together[0], in_chunks[0]):
            assert completion.token_ids == alone[0].token_ids
            assert completion.text == alone[0].text
            assert completion.prompt_token_ids == alone[0].prompt_token_ids
            assert completion.logprobs == pytest.approx(alone[0].logprobs, abs=1e-4)


def test_logprobs_are_the_raw_model_logprobs_of_the_sampled_tokens(policy: HFPolicy, trained: Qwen2ForCausalLM) -> None:
    for params in (
        SamplingParams(max_new_tokens=30),
        SamplingParams(max_new_tokens=30, temperature=0.7, top_p=0.8, seed=5),
    ):
        for completions in policy.generate(_mixed_requests(), params):
            completion = completions[0]
            assert completion.token_ids and completion.logprobs and completion.prompt_token_ids
            assert len(completion.logprobs) == len(completion.token_ids)
            assert all(logprob <= 0.0 for logprob in completion.logprobs)
            ids = torch.tensor([completion.prompt_token_ids + completion.token_ids])
            with torch.inference_mode():
                logits = trained(ids).logits[0, len(completion.prompt_token_ids) - 1 : -1].float()
            expected = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(completion.token_ids)[:, None])
            assert completion.logprobs == pytest.approx(expected.squeeze(1).tolist(), abs=1e-4)


def test_greedy_with_n_repeats_the_one_answer(policy: HFPolicy) -> None:
    [completions] = policy.generate([_ask()], SamplingParams(max_new_tokens=60, n=2))
    assert len(completions) == 2 and completions[0] == completions[1]


def test_sampling_n_with_a_seed_is_reproducible(tokenizer: Any) -> None:
    policy = HFPolicy(build_student(tokenizer, TINY, seed=1), tokenizer=tokenizer, max_batch_size=2)
    params = SamplingParams(temperature=1.0, n=3, max_new_tokens=12, seed=1234, stop=())
    requests = _mixed_requests()[:3]
    rng_before = torch.get_rng_state()
    first = policy.generate(requests, params)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left alone
    assert policy.generate(requests, params) == first
    assert [len(completions) for completions in first] == [3, 3, 3]
    for completions in first:  # an untrained model over 2k tokens: three equal samples would mean no sampling
        assert len({completion.token_ids for completion in completions}) > 1
        assert all(completion.logprobs and len(completion.logprobs) == 12 for completion in completions)
    other_seed = policy.generate(requests, SamplingParams(temperature=1.0, n=3, max_new_tokens=12, seed=99, stop=()))
    assert other_seed != first


def test_a_request_the_template_cannot_render_fails_alone(policy: HFPolicy) -> None:
    requests = [_ask(), PolicyRequest(messages=()), _ask()]
    results = policy.generate(requests, SamplingParams(max_new_tokens=60, n=2))
    assert [len(completions) for completions in results] == [2, 2, 2]
    assert all(completion.finish_reason == "error" and completion.error for completion in results[1])
    assert results[0][0].text == results[2][0].text == ACTION


def test_empty_call_and_close(trained: Qwen2ForCausalLM, tokenizer: Any) -> None:
    policy = HFPolicy(trained, tokenizer=tokenizer, name="student")
    assert policy.name == "student"
    assert policy.generate([], SamplingParams()) == []
    policy.close()
    policy.close()
    with pytest.raises(RuntimeError):
        policy.generate([_ask()], SamplingParams())


def test_policy_from_a_saved_directory_matches_the_in_memory_one(policy: HFPolicy, student_dir: Path) -> None:
    loaded = HFPolicy(student_dir)
    assert loaded.name == f"hf:{student_dir}"
    params = SamplingParams(max_new_tokens=30)
    requests = _mixed_requests()
    assert loaded.generate(requests, params) == policy.generate(requests, params)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft calls a deprecated API
def test_lora_adapter_is_loaded_and_applied(student_dir: Path, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    base = AutoModelForCausalLM.from_pretrained(student_dir)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(base, config).save_pretrained(tmp_path / "adapter")

    adapted = HFPolicy(student_dir, adapter=tmp_path / "adapter")
    assert adapted.name.endswith(f"+lora:{tmp_path / 'adapter'}")
    assert isinstance(adapted.model, peft.PeftModel)
    params = SamplingParams(max_new_tokens=10, stop=())
    [[with_adapter]] = adapted.generate([_ask()], params)
    [[without]] = HFPolicy(student_dir).generate([_ask()], params)
    assert isinstance(with_adapter, Completion) and with_adapter.finish_reason in ("stop", "length")
    assert with_adapter.logprobs != pytest.approx(without.logprobs, abs=1e-3)  # random LoRA weights change the model


def _shared_system_requests() -> list[PolicyRequest]:
    """Prompts that share a long system prompt, then differ in length (what a rollout batch looks like)."""
    system = {"role": "system", "content": "You solve tasks by writing Python code. " * 6}
    questions = ["Hi", QUESTION, "Which magazine was started first, Arthur's Magazine or First for Women?", "Why?"]
    return [PolicyRequest(messages=(system, {"role": "user", "content": question})) for question in questions]


def test_a_shared_prompt_start_computed_once_changes_no_greedy_output(trained: Qwen2ForCausalLM, tokenizer: Any) -> None:
    """The rows' common start (the system prompt) goes through the model once per call and every row starts from
    its KV cache; the completions are those of whole left-padded prompts, and of each prompt alone."""
    requests = _shared_system_requests()
    params = SamplingParams(max_new_tokens=24, stop=())
    reused = HFPolicy(trained, tokenizer=tokenizer)
    prompts = [reused.prompt_ids(request) for request in requests]
    assert shared_prefix_length(prompts) >= MIN_SHARED_PREFIX, "the test must exercise the shared-prefix path"
    padded = HFPolicy(trained, tokenizer=tokenizer, reuse_prefix=False)
    alone = HFPolicy(trained, tokenizer=tokenizer, max_batch_size=1)
    singles = [alone.generate([request], params)[0][0] for request in requests]
    for ours, theirs, single in zip(reused.generate(requests, params), padded.generate(requests, params), singles):
        assert ours[0].token_ids == theirs[0].token_ids == single.token_ids
        assert ours[0].prompt_token_ids == single.prompt_token_ids
        assert ours[0].logprobs == pytest.approx(theirs[0].logprobs, abs=1e-4)


def test_samples_from_a_shared_prompt_start_carry_the_models_logprobs(trained: Qwen2ForCausalLM, tokenizer: Any) -> None:
    """SAG's n samples of one prompt share all of it but the last token: computed once, then sampled n times; each
    sample's log-probabilities are the model's own for its tokens, so nothing is shifted or mixed up."""
    policy = HFPolicy(trained, tokenizer=tokenizer)
    [request] = _shared_system_requests()[1:2]
    params = SamplingParams(max_new_tokens=16, temperature=1.0, n=4, seed=7, stop=())
    [completions] = policy.generate([request], params)
    assert len(completions) == 4 and len({completion.token_ids for completion in completions}) > 1
    for completion in completions:
        ids = torch.tensor([completion.prompt_token_ids + completion.token_ids])
        with torch.inference_mode():
            logits = trained(ids).logits[0, len(completion.prompt_token_ids) - 1 : -1].float()
        expected = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(completion.token_ids)[:, None])
        assert completion.logprobs == pytest.approx(expected.squeeze(1).tolist(), abs=1e-4)
