"""Learning from sessions: action normalisation and workflow mining."""

from procmem.learning.mining import PatternCounter, WorkflowCandidate, mine_workflows, outcome_summary, workflow_key
from procmem.learning.normalize import (
    PLACEHOLDERS,
    NormalizedAction,
    collapse_whitespace,
    extract_task_values,
    fill_template,
    normalize_action,
    placeholders_of,
    program,
)

__all__ = [
    "PLACEHOLDERS",
    "NormalizedAction",
    "PatternCounter",
    "WorkflowCandidate",
    "collapse_whitespace",
    "extract_task_values",
    "fill_template",
    "mine_workflows",
    "normalize_action",
    "outcome_summary",
    "placeholders_of",
    "program",
    "workflow_key",
]
