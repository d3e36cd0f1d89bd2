"""Workflows: one durable workflow per service subscription."""

TASK_QUEUE = "hostlife-lifecycle"


def service_workflow_id(service_id: str) -> str:
    return f"service-{service_id}"
