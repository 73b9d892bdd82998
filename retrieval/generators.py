"""Answer generators behind one protocol (`generate`, `stream`): a local transformers model (DeepSeek),
any OpenAI-compatible endpoint, and the extractive fallback that needs no language model."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from kb.device import torch_device
from kb.errors import ConfigError, GeneratorError
from kb.keyword_index import terms
from kb.optional import require
from kb.settings import GeneratorSettings
from kb.text import CJK
from retrieval.citations import split_sentences
from retrieval.prompt import Prompt

log = logging.getLogger(__name__)
LOAD_RETRY_S = 60  # a model that failed to load is tried again after this long, not on every question


class Generator(Protocol):
    backend: str  # "extractive" | "transformers" | "openai"
    model: str
    label: str  # shown with every answer

    def stream(self, prompt: Prompt, usage: dict | None = None, stop: threading.Event | None = None) -> Iterator[str]:
        """Answer text as it is produced (may contain <think>…</think>); fills usage tokens if given.
        Once `stop` is set (the reader went away) generation ends within a token or an event."""
        ...

    def generate(self, prompt: Prompt, usage: dict | None = None) -> str: ...

    def label_for(self, lang: str) -> str:
        """The label in the question's language ("zh" or "en")."""
        ...

    def starts_in_reasoning(self, prompt: Prompt) -> bool:
        """True when the output begins inside <think> (the prompt itself opened it)."""
        ...


class _Generate:
    label: str

    def generate(self, prompt: Prompt, usage: dict | None = None) -> str:
        return "".join(self.stream(prompt, usage))

    def label_for(self, lang: str) -> str:
        return self.label

    def starts_in_reasoning(self, prompt: Prompt) -> bool:
        return False


# -- extractive ------------------------------------------------------------------------------
_CJK_END = re.compile(f"[{CJK}\uff00-\uffef\u3000-\u303f]$")  # ideographs and CJK punctuation
_CJK_START = re.compile(f"^[{CJK}\uff00-\uffef\u3000-\u303f]")


def unwrap_lines(text: str) -> str:
    """Join the hard line breaks inside a paragraph (PDF text), keep blank-line paragraph breaks."""
    paragraphs = re.split(r"\n\s*\n", text)
    out = []
    for para in paragraphs:
        lines = [ln.strip() for ln in para.splitlines() if ln.strip()]
        joined = ""
        for ln in lines:
            if joined and not (_CJK_END.search(joined) and _CJK_START.search(ln)) and not joined.endswith("-"):
                joined += " "
            joined += ln
        out.append(joined)
    return "\n\n".join(p for p in out if p)


def looks_like_prose(sentence: str) -> bool:
    """Not a table-of-contents line, a bare heading number or a fragment."""
    if len(sentence) < 12 or re.search(r"(\.\s?){3,}|…{2,}|\.{4,}", sentence):
        return False
    letters = sum(ch.isalpha() for ch in sentence)
    return letters >= 0.5 * len(sentence.replace(" ", ""))


class ExtractiveGenerator(_Generate):
    """No language model: quotes the context sentences that share most of the question's terms, each cited."""

    backend = "extractive"
    model = "none"
    LABELS = {"zh": "摘录式回答（未使用语言模型）：以下句子原文摘自来源。",
              "en": "Extractive answer (no language model): sentences quoted from the sources."}
    label = LABELS["en"]
    MAX_SENTENCE_CHARS = 400
    RANK_PENALTY = 0.15  # per place in the retriever's ranking; measured with `kb eval --backend extractive`
    KEEP_SHARE = 0.5

    def label_for(self, lang: str) -> str:
        return self.LABELS[lang]

    def __init__(self, cfg: GeneratorSettings, context_chars: int = 1500):
        self.sentences = cfg.extract_sentences
        self.context_chars = context_chars

    @staticmethod
    def _match_keys(text: str) -> set[str]:
        """Terms, with English words cut to 6 letters so "pronounced" meets "pronounce"."""
        return {t[:6] if t.isascii() and t.isalpha() else t for t in terms(text)}

    def pick(self, prompt: Prompt) -> list[tuple[int, int, str]]:
        """(context number, position, sentence) of the best sentences, in reading order."""
        q = self._match_keys(prompt.searched or prompt.question)
        best_score = max((c.score for c in prompt.contexts), default=0.0) or 1.0
        scored = []
        for n, ctx in enumerate(prompt.contexts, 1):
            # a context far below the top one is less likely to hold the answer
            relevance = max(0.0, min(1.0, ctx.score / best_score))
            for pos, sent in enumerate(split_sentences(unwrap_lines(ctx.text[: self.context_chars]))):
                if not looks_like_prose(sent) or sent.rstrip("[]0123456789").endswith(("?", "？")):
                    continue  # a question (often the next FAQ entry's title) is never an answer
                if len(sent) > self.MAX_SENTENCE_CHARS:
                    sent = sent[: self.MAX_SENTENCE_CHARS].rstrip() + "…"
                overlap = len(q & self._match_keys(sent)) / math.sqrt(len(q) or 1)
                # the retriever's order counts (the top context is right most often), then earlier
                # sentences (answers tend to lead)
                score = overlap * (0.5 + 0.5 * relevance) - self.RANK_PENALTY * (n - 1) - 0.01 * pos
                scored.append((score, n, pos, sent, overlap))
        ranked = sorted(scored, reverse=True)
        top = ranked[0][0] if ranked else 0.0
        # only sentences nearly as good as the best: a weak sentence from another context adds a wrong citation
        best = [s for s in ranked if s[4] > 0 and s[0] >= self.KEEP_SHARE * top][: self.sentences]
        if not best and scored:  # nothing shares a term: quote the best context's opening
            best = [min(scored, key=lambda s: (s[1], s[2]))]
        return sorted((n, pos, sent) for _, n, pos, sent, _ in best)

    def stream(self, prompt: Prompt, usage: dict | None = None, stop: threading.Event | None = None) -> Iterator[str]:
        sep = "" if prompt.language == "zh" else " "
        for i, (n, _, sent) in enumerate(self.pick(prompt)):
            yield (sep if i else "") + f"{sent}[{n}]"
        if usage is not None:
            usage.update(prompt_tokens=0, completion_tokens=0)


# -- transformers ----------------------------------------------------------------------------
class TransformersGenerator(_Generate):
    """A local Hugging Face causal LM (default DeepSeek-R1-Distill-Qwen-7B): bf16 on CUDA, optional
    bitsandbytes 8/4-bit, FlashAttention-2 when installed, the model's chat template, streaming,
    an optional LoRA adapter. Loaded once, on first use; one generation at a time per model."""

    backend = "transformers"

    def __init__(self, cfg: GeneratorSettings, device: str = "auto"):
        self.cfg = cfg
        self.model = cfg.model
        self.device = torch_device(device)
        self.label = f"{Path(cfg.model).name} (transformers, {self.device})"
        self._tok = None
        self._lm = None
        self._lock = threading.Lock()  # one generation at a time: held by the generating thread
        self._load_lock = threading.Lock()  # the model loads once, however many first questions arrive
        self._failed: tuple[float, GeneratorError] | None = None  # when loading last failed, and why

    def load(self) -> None:
        with self._load_lock:
            if self._lm is not None:
                return
            if self._failed and time.monotonic() - self._failed[0] < LOAD_RETRY_S:
                raise GeneratorError(str(self._failed[1]))
            try:
                self._load()
                self._failed = None
            except Exception as exc:  # noqa: BLE001 - out of memory, a bad adapter, a quantization library …
                failure = exc if isinstance(exc, GeneratorError) else GeneratorError(
                    f"cannot load the model {self.cfg.model!r}: {type(exc).__name__}: {exc}")
                self._tok = self._lm = None
                log.warning("%s (tried again in %d s at the earliest)", failure, LOAD_RETRY_S)
                self._failed = (time.monotonic(), failure)
                raise failure from exc

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg = self.cfg
        # only what is on this machine: never a download at question time (a 15 GB model, a hub outage)
        kwargs: dict = {"dtype": torch.bfloat16 if self.device == "cuda" else torch.float32, "local_files_only": True}
        if self.device == "cuda":
            try:
                import flash_attn  # noqa: F401

                kwargs["attn_implementation"] = "flash_attention_2"
            except ImportError:
                kwargs["attn_implementation"] = "sdpa"
        if cfg.quantization != "none":
            require("bitsandbytes", "quant")
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=cfg.quantization == "8bit", load_in_4bit=cfg.quantization == "4bit",
                bnb_4bit_compute_dtype=torch.bfloat16)
            kwargs["device_map"] = "auto"
        try:
            tok = AutoTokenizer.from_pretrained(cfg.model, local_files_only=True)
            lm = AutoModelForCausalLM.from_pretrained(cfg.model, **kwargs)
        except (OSError, ValueError) as exc:
            raise GeneratorError(f"cannot load the model {cfg.model!r} from this machine: {exc}") from exc
        if cfg.quantization == "none":
            lm = lm.to(self.device)
        if cfg.adapter:
            peft = require("peft", "lora")
            lm = peft.PeftModel.from_pretrained(lm, cfg.adapter, local_files_only=True)
        lm.eval()
        self._tok, self._lm = tok, lm

    def render(self, prompt: Prompt) -> str:
        """The prompt as the model sees it: its chat template, or plain turns when it has none."""
        self.load()
        if self._tok.chat_template:
            return self._tok.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
        return "\n\n".join(m["content"] for m in prompt.messages) + "\n\n"

    def starts_in_reasoning(self, prompt: Prompt) -> bool:
        """R1-style templates end the prompt with "<think>": the output starts inside the reasoning."""
        return self.render(prompt).rstrip().endswith("<think>")

    def stream(self, prompt: Prompt, usage: dict | None = None, stop: threading.Event | None = None) -> Iterator[str]:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        text = self.render(prompt)
        tok, lm, cfg = self._tok, self._lm, self.cfg
        inputs = tok(text, return_tensors="pt", add_special_tokens=False).to(lm.device)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=cfg.timeout_s)
        sampling = {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p} if cfg.temperature > 0 \
            else {"do_sample": False}
        failure: list[BaseException] = []
        abandoned = threading.Event()

        class Stopped(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:  # noqa: ANN001, ANN003
                return abandoned.is_set() or (stop is not None and stop.is_set())

        def run() -> None:
            try:
                lm.generate(**inputs, streamer=streamer, max_new_tokens=cfg.max_new_tokens,
                            repetition_penalty=cfg.repetition_penalty,
                            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                            stopping_criteria=StoppingCriteriaList([Stopped()]), **sampling)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                failure.append(exc)
                streamer.end()
            finally:
                self._lock.release()  # by the generating thread: a reader that stalls never holds the model

        out: list[str] = []
        self._lock.acquire()
        try:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
        except BaseException:
            self._lock.release()
            raise
        try:
            for piece in streamer:
                out.append(piece)
                yield piece
        finally:  # also when the reader closes the stream early: the model stops at its next token
            abandoned.set()
        worker.join()
        if failure:
            raise GeneratorError(f"generation failed: {failure[0]}") from failure[0]
        if usage is not None:
            usage.update(prompt_tokens=int(inputs["input_ids"].shape[1]),
                         completion_tokens=len(tok("".join(out), add_special_tokens=False)["input_ids"]))


# -- OpenAI-compatible HTTP ------------------------------------------------------------------
class OpenAIGenerator(_Generate):
    """Any OpenAI-compatible chat endpoint (vLLM serving DeepSeek, the DeepSeek API, Ollama, `transformers serve`)."""

    backend = "openai"

    def __init__(self, cfg: GeneratorSettings):
        self.cfg = cfg
        self.model = cfg.model
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.label = f"{cfg.model} (OpenAI-compatible, {cfg.base_url})"

    def _request(self, prompt: Prompt) -> dict:
        cfg = self.cfg
        body = {"model": cfg.model, "messages": prompt.messages, "stream": True, "max_tokens": cfg.max_new_tokens,
                "temperature": cfg.temperature, "top_p": cfg.top_p, "stream_options": {"include_usage": True}}
        if cfg.repetition_penalty != 1.0:
            body["repetition_penalty"] = cfg.repetition_penalty  # vLLM's extension
        return body

    def stream(self, prompt: Prompt, usage: dict | None = None, stop: threading.Event | None = None) -> Iterator[str]:
        import httpx

        cfg = self.cfg
        headers = {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"} if cfg.api_key else {}
        timeout = httpx.Timeout(cfg.timeout_s, connect=min(10.0, cfg.timeout_s))
        for attempt in range(cfg.retries + 1):
            started = False
            try:
                with httpx.Client(timeout=timeout) as client, client.stream(
                        "POST", self.url, json=self._request(prompt), headers=headers) as resp:
                    if resp.status_code >= 500 and attempt < cfg.retries:
                        time.sleep(0.5 * 2 ** attempt)
                        continue
                    if resp.status_code >= 400:
                        raise GeneratorError(f"{self.url} answered HTTP {resp.status_code}: "
                                             f"{resp.read().decode(errors='replace')[:300]}")
                    thinking = False
                    for event in self._events(resp):
                        if stop is not None and stop.is_set():
                            return  # leaving the `with` closes the connection: the server stops generating
                        if event.get("usage") and usage is not None:
                            usage.update(prompt_tokens=event["usage"].get("prompt_tokens"),
                                         completion_tokens=event["usage"].get("completion_tokens"))
                        for choice in event.get("choices") or []:
                            delta = choice.get("delta") or {}
                            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                            content = delta.get("content")
                            piece = ""
                            if reasoning:  # DeepSeek API / vLLM reasoning parser: keep it as <think>
                                piece += ("" if thinking else "<think>") + reasoning
                                thinking = True
                            if content:
                                piece += ("</think>" if thinking else "") + content
                                thinking = False
                            if piece:
                                started = True
                                yield piece
                    if thinking:
                        yield "</think>"
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                if started or attempt >= cfg.retries:
                    raise GeneratorError(f"cannot reach the generator at {cfg.base_url} ({exc}); "
                                         "is the server running?") from exc
                time.sleep(0.5 * 2 ** attempt)
            except httpx.TimeoutException as exc:
                raise GeneratorError(f"the generator at {cfg.base_url} did not answer within {cfg.timeout_s:g} s") from exc

    def _events(self, resp) -> Iterator[dict]:  # noqa: ANN001 - httpx.Response
        """Server-sent events of a streamed chat completion; garbage is an error, not an empty answer."""
        seen = False
        for line in resp.iter_lines():
            line = line.strip()
            if not line or line.startswith(":"):
                continue
            if not line.startswith("data:"):
                raise GeneratorError(f"{self.url} did not answer with an OpenAI event stream: {line[:200]!r}")
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except json.JSONDecodeError as exc:
                raise GeneratorError(f"{self.url} sent an unreadable event: {data[:200]!r}") from exc
            if isinstance(event, dict) and "error" in event:
                raise GeneratorError(f"{self.url} reported an error: {event['error']}")
            if not isinstance(event, dict) or ("choices" not in event and "usage" not in event):
                raise GeneratorError(f"{self.url} sent something that is not a chat completion chunk: {data[:200]!r}")
            seen = True
            yield event
        if not seen:
            raise GeneratorError(f"{self.url} closed the stream without an answer")


def model_available_locally(model: str) -> bool:
    """A local folder, or a Hugging Face id already in the local cache (nothing is downloaded to check)."""
    if Path(model).is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(model, "config.json"), str)


def choose_backend(cfg: GeneratorSettings, device: str = "auto") -> str:
    if cfg.backend != "auto":
        return cfg.backend
    return "transformers" if torch_device(device) == "cuda" and model_available_locally(cfg.model) else "extractive"


# Every backend by name; the CLI's choices come from here. Each takes (settings, device, context_chars).
GENERATORS: dict[str, Callable[[GeneratorSettings, str, int], Generator]] = {
    "extractive": lambda cfg, device, chars: ExtractiveGenerator(cfg, chars),
    "transformers": lambda cfg, device, chars: TransformersGenerator(cfg, device),
    "openai": lambda cfg, device, chars: OpenAIGenerator(cfg),
}


_GENERATORS: dict[str, Generator] = {}
_GENERATORS_LOCK = threading.Lock()


def make_generator(cfg: GeneratorSettings, device: str = "auto", context_chars: int = 1500) -> Generator:
    """The generator these settings name, one per process (a local model is loaded once, whichever
    collection or web session asks)."""
    key = f"{cfg.model_dump_json()}|{device}|{context_chars}"
    backend = choose_backend(cfg, device)
    if backend not in GENERATORS:
        raise ConfigError(f"unknown generator backend {backend!r}; choose one of: auto, {', '.join(sorted(GENERATORS))}")
    with _GENERATORS_LOCK:
        if key not in _GENERATORS:
            _GENERATORS[key] = GENERATORS[backend](cfg, device, context_chars)
        return _GENERATORS[key]
