"""Named fakes for the fast unit layer (the integration tests keep the real parts)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from retrieval.prompt import Prompt


class EchoGenerator:
    """FAKE generator: answers with the first line of context [1], cited, streamed word by word. Implements
    only the Generator protocol, to show a new backend needs nothing but a registry entry."""

    backend = "echo"
    model = "echo-fake"
    label = "echo"

    def __init__(self, *_args) -> None:  # (settings, device, context_chars) like every registered backend
        self.prompts: list[Prompt] = []

    def stream(self, prompt: Prompt, usage: dict | None = None, stop: threading.Event | None = None) -> Iterator[str]:
        self.prompts.append(prompt)
        first = prompt.contexts[0].text.strip().splitlines()[0]
        for word in f"{first} [1]".split(" "):
            yield word + " "
        if usage is not None:
            usage.update(prompt_tokens=sum(len(m["content"]) for m in prompt.messages), completion_tokens=len(first))

    def generate(self, prompt: Prompt, usage: dict | None = None) -> str:
        return "".join(self.stream(prompt, usage))

    def label_for(self, lang: str) -> str:
        return f"echo ({lang})"

    def starts_in_reasoning(self, prompt: Prompt) -> bool:
        return False
