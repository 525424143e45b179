"""The end-to-end scripts' checks: each prints one line; the first failure exits 1; `finish()`
prints the "N passed, 0 failed" line the Rust runner (tests/e2e/run.rs) looks for."""

import sys

_passed = 0


def check(name, cond, detail=""):
    global _passed
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    _passed += 1
    print(f"ok   {name}")


def finish():
    print(f"{_passed} passed, 0 failed")
