"""`colbert-tap explain A B`: from "where two runs diverge" to "which stages cause it" (stage level)."""

from colbert.explain.chain import Explanation, ExplainError, Step, explain

__all__ = ["Explanation", "ExplainError", "Step", "explain"]
