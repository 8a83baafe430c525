"""Which modules model code may import, per env family (a policy enforced in the sandbox worker)."""

from __future__ import annotations

STDLIB_IMPORTS: frozenset[str] = frozenset(
    {
        "collections", "datetime", "functools", "itertools", "json", "math", "operator", "queue",
        "random", "re", "stat", "statistics", "string", "time", "unicodedata",
    }
)
"""Every env allows these: harmless standard-library helpers."""

MATH_IMPORTS: frozenset[str] = STDLIB_IMPORTS | {"cmath", "decimal", "fractions", "numbers", "numpy", "sympy"}
"""Math envs add numerical and symbolic computation."""
