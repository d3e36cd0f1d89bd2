"""The load and restart stack lives with the scripts that run it at full size (bench/reliability_stack.py)."""

from bench.reliability_stack import Stack, env_int, gather_limited, stack

__all__ = ["Stack", "env_int", "gather_limited", "stack"]
