"""What agents cost: usage added to a run and its convoy's spend; a convoy that reaches its
budget cancels its queued runs and says so. (The rule that refuses a new run is in rules.py.)"""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from convoys.models import Convoy
from events.services import event_append
from runner import services
from runner.models import AgentRun
from runner.rules import convoy_budget_message
from runner.usage import Usage


@transaction.atomic
def agent_run_usage_add(*, run: AgentRun, usage: Usage, source: str = "api") -> AgentRun:
    """Add tokens and dollars to a run and its convoy's spend. When the convoy's spend reaches
    its budget, queued runs of the convoy are cancelled and the convoy says so (an event)."""
    if usage.input_tokens < 0 or usage.output_tokens < 0 or usage.cost_usd < 0:
        raise ValidationError({"usage": "token counts and cost cannot be negative."})
    AgentRun.objects.filter(pk=run.pk).update(
        input_tokens=F("input_tokens") + usage.input_tokens,
        output_tokens=F("output_tokens") + usage.output_tokens,
        cost_usd=F("cost_usd") + usage.cost_usd,
    )
    run.refresh_from_db(fields=["input_tokens", "output_tokens", "cost_usd"])
    payload = {
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost_usd": str(run.cost_usd),
        "source": source,
    }
    if run.convoy_id is None or not usage.cost_usd:
        services.run_event(run, "run.usage", payload)
        return run
    convoy = Convoy.objects.select_for_update().get(pk=run.convoy_id)
    before = convoy.spent_usd
    Convoy.objects.filter(pk=convoy.pk).update(spent_usd=F("spent_usd") + usage.cost_usd)
    convoy.refresh_from_db(fields=["spent_usd"])
    services.run_event(run, "run.usage", {**payload, "convoy_spent_usd": str(convoy.spent_usd)})
    budget = convoy.budget_usd
    if budget is not None and before < budget <= convoy.spent_usd:
        convoy_budget_reached(convoy=convoy)
    return run


@transaction.atomic
def convoy_budget_reached(*, convoy: Convoy) -> None:
    message = convoy_budget_message(convoy)
    event_append(
        "convoy.budget_reached",
        {
            "title": convoy.title,
            "budget_usd": str(convoy.budget_usd),
            "spent_usd": str(convoy.spent_usd),
            "message": message,
        },
        repository_id=convoy.repository_id,
        convoy_id=convoy.id,
    )
    queued = AgentRun.objects.filter(convoy=convoy, state=AgentRun.State.QUEUED).select_related(
        "agent", "rig"
    )
    for run in queued:
        services.agent_run_cancel(run=run, reason=message)
