"""The one registry of known differences between backends: each entry is a strict xfail.

Key: "<test file name>::<test function name>" (without parameters). Value: {backend: reason}.
Strict: when a gap gets fixed the test XPASSes, fails the run, and the entry must go — so this
list cannot rot.
"""

GAPS: dict[str, dict[str, str]] = {
}
