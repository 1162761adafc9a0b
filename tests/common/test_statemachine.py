import itertools

import pytest

from common.statemachine import (
    IllegalTransition,
    StaleState,
    check_transition,
    state_field,
    transition,
)
from convoys.models import Bead, Convoy, Leg
from rigs.models import MergeRequest, Rig
from tests import factories

MODELS = [Rig, MergeRequest, Convoy, Leg, Bead]
MAKERS = {
    Rig: factories.rig,
    MergeRequest: factories.merge_request,
    Convoy: factories.convoy,
    Leg: factories.leg,
    Bead: factories.bead,
}


def all_pairs(model):
    states = [c for c, _ in model._meta.get_field(state_field(model)).choices]
    return list(itertools.product(states, states))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_table_covers_every_state(model):
    states = {c for c, _ in model._meta.get_field(state_field(model)).choices}
    assert set(model.TRANSITIONS) == states
    for targets in model.TRANSITIONS.values():
        assert targets <= states


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_check_transition_matches_table(model):
    for current, target in all_pairs(model):
        if target in model.TRANSITIONS[current]:
            check_transition(model, current, target)
        else:
            with pytest.raises(IllegalTransition) as err:
                check_transition(model, current, target)
            assert f"'{current}'" in str(err.value) and f"'{target}'" in str(err.value)


@pytest.mark.django_db
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_transition_applies_allowed_and_refuses_illegal(model):
    field = state_field(model)
    obj = MAKERS[model]()
    start = getattr(obj, field)
    allowed = sorted(model.TRANSITIONS[start])
    refused = sorted(set(model.TRANSITIONS) - set(allowed) - {start})
    if refused:
        with pytest.raises(IllegalTransition):
            transition(obj, refused[0])
        obj.refresh_from_db()
        assert getattr(obj, field) == start  # nothing half-written
    transition(obj, allowed[0])
    obj.refresh_from_db()
    assert getattr(obj, field) == allowed[0]


@pytest.mark.django_db
def test_transition_is_compare_and_swap():
    rig = factories.rig()
    stale = Rig.objects.get(pk=rig.pk)
    transition(rig, Rig.State.PROVISIONING)
    with pytest.raises(StaleState, match="provisioning"):
        transition(stale, Rig.State.PROVISIONING)


@pytest.mark.django_db
def test_final_states_refuse_everything():
    mr = factories.merge_request(state=MergeRequest.State.MERGED)
    with pytest.raises(IllegalTransition, match="final state"):
        transition(mr, MergeRequest.State.QUEUED)
