"""The chat layout FusterCluck trains on: each turn is `<|role|>`, newline, the text, newline,
`<|end|>`, turns joined by newlines. The one template: the corpus renders conversations with it
(engine.data.records, engine.data.builtin), SFT masks its assistant turns (`assistant_mask`),
generation prompts with it (`chat_prompt`) and the exports carry it as Jinja (`JINJA`)."""

from __future__ import annotations

import numpy as np

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}

# The same layout for Hugging Face's apply_chat_template (tokenizer_config.json's chat_template) and
# llama.cpp / mlx-lm, which read it from there or from the GGUF metadata.
JINJA = (
    "{% for message in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{% if messages %}{{ '\\n' }}{% endif %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def turn(role: str, text: str) -> str:
    """One finished turn."""
    return f"{role}\n{text}\n{END}"


def render(messages: list[tuple[str, str]], add_generation_prompt: bool = False) -> str:
    """(role symbol, text) turns as one document; with `add_generation_prompt`, the assistant's
    opening after them (what a model is asked to continue)."""
    parts = [turn(role, text) for role, text in messages]
    if add_generation_prompt:
        parts.append(f"{ASSISTANT}\n")
    return "\n".join(parts)


def chat_prompt(user: str, system: str = "") -> str:
    """A prompt asking for the assistant's answer to `user` (after an optional system turn)."""
    turns = ([(SYSTEM, system)] if system else []) + [(USER, user)]
    return render(turns, add_generation_prompt=True)


def assistant_mask(ids: np.ndarray, assistant_id: int, end_id: int, role_ids: tuple[int, ...],
                   inside: bool = False) -> np.ndarray:
    """Which tokens of one document an SFT step learns: those after an `<|assistant|>` symbol up to
    and including its `<|end|>`. `inside` says the stretch starts within an assistant turn (a long
    conversation cut). A document without any role symbol is not a conversation: all of it is learnt."""
    ids = np.asarray(ids)
    opens = ids == assistant_id
    if not inside and not np.isin(ids, role_ids).any():
        return np.ones(ids.shape, dtype=bool)
    # +1 after an assistant symbol, -1 after any other role symbol or an end: the state is the last mark.
    mark = np.zeros(ids.shape, dtype=np.int8)
    mark[1:][opens[:-1]] = 1
    mark[1:][np.isin(ids[:-1], [r for r in role_ids if r != assistant_id])] = -1
    mark[1:][ids[:-1] == end_id] = -1
    state = np.full(ids.shape, 1 if inside else -1, dtype=np.int8)
    last = np.maximum.accumulate(np.where(mark != 0, np.arange(ids.size), -1))  # the latest mark's position
    has = last >= 0
    state[has] = mark[last[has]]
    return state > 0


def last_state(ids: np.ndarray, assistant_id: int, end_id: int, role_ids: tuple[int, ...]) -> bool:
    """Whether a conversation cut after `ids` stands inside an assistant turn."""
    ids = np.asarray(ids)
    marks = np.flatnonzero(np.isin(ids, (*role_ids, end_id)))
    return bool(marks.size) and int(ids[marks[-1]]) == assistant_id
