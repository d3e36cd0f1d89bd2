"""The product rules of SPEC as data, and the pure date arithmetic that turns them into timelines.

Nothing here imports temporalio: the policy is testable without a server, and workflows import
it passed through the sandbox.
"""
