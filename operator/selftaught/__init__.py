"""selftaught: train LLM-as-a-Judge evaluators without human labels (Self-Taught Evaluators)."""

__version__ = "0.1.0"
