"""The paper's instruction categories (its 15-category selection template, in its order)."""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "Coding",
    "Mathematical reasoning",
    "Asking for Advice",
    "Brainstorming",
    "Classification",
    "Closed QA",
    "Creative Writing",
    "Extraction",
    "Inhabiting a Character/Persona",
    "Open QA",
    "Rewriting",
    "Summarization",
    "Knowledge and Reasoning",
    "Humanity, History or Social Studies",
    "Other",
)
#: The paper keeps "reasoning" prompts; it does not say whether maths counts, so both do by default.
REASONING_CATEGORIES: tuple[str, ...] = ("Knowledge and Reasoning", "Mathematical reasoning")
