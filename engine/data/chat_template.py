"""The chat layout FusterCluck trains on: each turn is `<|role|>`, newline, the text, newline,
`<|end|>`, turns joined by newlines (engine.data.builtin.chat writes it; generation prompts with it)."""

from __future__ import annotations

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"


def turn(role: str, text: str) -> str:
    """One finished turn."""
    return f"{role}\n{text}\n{END}"


def chat_prompt(user: str, system: str = "") -> str:
    """A prompt asking for the assistant's answer to `user` (after an optional system turn)."""
    parts = [turn(SYSTEM, system)] if system else []
    parts += [turn(USER, user), f"{ASSISTANT}\n"]
    return "\n".join(parts)
