"""The transformers backend on tiny randomly initialised DeepSeek-V3 (MoE) and Qwen2 models with a
locally trained tokenizer: chat template, generate, streaming, <think> separation, LoRA adapters."""

from __future__ import annotations

import pytest

from kb.errors import GeneratorError
from kb.settings import GeneratorSettings
from retrieval.answer import AnswerStream
from retrieval.generators import TransformersGenerator, choose_backend, make_generator
from retrieval.prompt import build_prompt
from retrieval.types import Context, Retrieval
from tests.tiny_models import build_deepseek_v3, build_qwen2

CONTEXTS = [Context(1, 0.9, "Debian 是一个自由的操作系统。", 2, None, "/docs/guide.pdf", 1),
            Context(2, 0.8, "APT installs packages.", None, None, "/docs/apt.md", 2)]


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return build_qwen2(tmp_path_factory.mktemp("qwen2") / "model")


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
    return build_deepseek_v3(tmp_path_factory.mktemp("dsv3") / "model")


def greedy(path, **kw) -> GeneratorSettings:
    return GeneratorSettings(**{"backend": "transformers", "model": str(path), "temperature": 0,
                                "max_new_tokens": 12, **kw})


def test_qwen2_chat_template_stream_equals_generate_and_counts_tokens(qwen2):
    gen = TransformersGenerator(greedy(qwen2), device="cpu")
    prompt = build_prompt("什么是 Debian？", CONTEXTS)
    rendered = gen.render(prompt)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")
    assert "根据以下上下文回答：" in rendered and "[1] 来源: guide.pdf，第 2 页" in rendered
    usage: dict = {}
    pieces = list(gen.stream(prompt, usage))
    assert len(pieces) >= 1 and "".join(pieces) == gen.generate(prompt)  # greedy: the same tokens
    assert usage["prompt_tokens"] == len(gen._tok(rendered, add_special_tokens=False)["input_ids"])
    assert 1 <= usage["completion_tokens"] <= 12 + 2
    assert gen._lm is not None and type(gen._lm).__name__ == "Qwen2ForCausalLM"


def test_sampling_settings_reach_generate(qwen2):
    gen = TransformersGenerator(GeneratorSettings(model=str(qwen2), temperature=1.5, top_p=0.99,
                                                  max_new_tokens=24), device="cpu")
    prompt = build_prompt("What is Debian?", CONTEXTS)
    outs = {gen.generate(prompt) for _ in range(3)}
    assert len(outs) > 1  # sampling, not greedy


def test_deepseek_v3_reasoning_is_kept_apart_from_the_answer(deepseek):
    gen = TransformersGenerator(greedy(deepseek, max_new_tokens=16), device="cpu")
    prompt = build_prompt("What is Debian?", CONTEXTS)
    assert gen.starts_in_reasoning(prompt)  # R1 template: the generation prompt ends with "<think>"
    raw = gen.generate(prompt)
    stream = AnswerStream("What is Debian?", Retrieval("What is Debian?", CONTEXTS, True, {}), gen)
    shown = "".join(stream)
    answer = stream.answer
    assert type(gen._lm).__name__ == "DeepseekV3ForCausalLM"
    before_close = raw.split("</think>", 1)[0]
    assert answer.reasoning == before_close.strip()  # everything up to </think> is reasoning...
    assert "<think>" not in shown and "</think>" not in shown  # ...and never shown as the answer
    assert shown == (raw.split("</think>", 1)[1] if "</think>" in raw else "")
    assert answer.backend == "transformers" and "generate" in answer.timings


def test_lora_adapter_is_loaded_and_changes_the_output(qwen2, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(qwen2)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    prompt = build_prompt("What is Debian?", CONTEXTS)
    plain = TransformersGenerator(greedy(qwen2, max_new_tokens=20), device="cpu")
    adapted = TransformersGenerator(greedy(qwen2, max_new_tokens=20, adapter=str(tmp_path / "adapter")), device="cpu")
    out_adapted = adapted.generate(prompt)
    assert type(adapted._lm).__name__.startswith("PeftModel")
    assert out_adapted != plain.generate(prompt)


def test_missing_model_is_a_clear_error(tmp_path):
    gen = TransformersGenerator(GeneratorSettings(model=str(tmp_path / "nope")), device="cpu")
    with pytest.raises(GeneratorError, match="cannot load the model"):
        gen.generate(build_prompt("q?", CONTEXTS))


def test_backend_choice_without_cuda(qwen2):
    assert choose_backend(GeneratorSettings(model=str(qwen2)), device="cpu") == "extractive"
    assert choose_backend(GeneratorSettings(model=str(qwen2)), device="cuda") == "transformers"
    assert choose_backend(GeneratorSettings(model="no-such/model-xyz"), device="cuda") == "extractive"
    assert make_generator(GeneratorSettings(backend="openai")).backend == "openai"


def test_the_model_loads_once_however_many_first_questions_arrive(qwen2):
    import threading

    gen = TransformersGenerator(greedy(qwen2), device="cpu")
    loads = []
    real = gen._load
    gen._load = lambda: loads.append(1) or real()
    threads = [threading.Thread(target=gen.load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [1] and gen._lm is not None


def test_a_model_that_is_not_on_this_machine_fails_once_and_is_not_retried_on_every_question(tmp_path):
    gen = TransformersGenerator(greedy(tmp_path / "not-here"), device="cpu")
    tries = []
    real = gen._load
    gen._load = lambda: tries.append(1) or real()
    for _ in range(3):
        with pytest.raises(GeneratorError, match="cannot load the model .* from this machine"):
            gen.load()
    assert tries == [1]  # within the back-off the same error answers at once
    hub = TransformersGenerator(greedy("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"), device="cpu")
    with pytest.raises(GeneratorError, match="from this machine"):  # a hub id not cached here: no download
        hub.load()
