"""The console's pages, one module per capability; importing them fills the route table (`app.page`)."""

from outcrop.api.console.pages import (  # noqa: F401
    agents,
    catalog,
    customization,
    evaluation,
    guardrails,
    iam,
    insights,
    knowledge,
    provisioning,
    storage,
)
