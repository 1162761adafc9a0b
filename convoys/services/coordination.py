"""Coordination between rigs and with people: messages into other rigs' inboxes (`gt send`),
escalations to a person and their answers (`gt escalate`, the board's Answer form), an agent's
turn ended without a merge (`gt done --status escalated|deferred`), comments on beads
(`gt comment`) and giving a claim up (`gt release`).

Messages, escalations and answers are notifications (`notifications.services`), so they reach
the inbox, the rig's websocket group, the board and the webhooks like any notice. A message
replies to a notice by `reply_to`; an answer is a message replying to the escalation it
resolves. A turn ended is an open notice on the topic `turn:<leg id>`: the runner neither
restarts nor wakes the rig's agent for that leg while it is open (`runner.rules`), and a person
acting closes it (answering it, or launching the agent)."""

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from common.errors import Refusal
from convoys.models import Bead, BeadComment, Convoy, Leg
from convoys.selectors import rig_current_leg, rigs_current_legs, rigs_finished_work
from convoys.services.bead_graph import _bead_repository_id, bead_event
from convoys.services.convoys import WorkFinished
from convoys.services.leases import claim_end_values
from events.services import event_append
from notifications.models import ASKS_PERSON_KINDS, Notification
from notifications.services import notices_resolve, notification_send, notifications_send_many
from rigs.models import Agent, Rig

MESSAGE_MAX = 4_000  # a message, a question, an answer, a comment (characters)
REASON_MAX = 2_000  # why a turn ended
SUMMARY_TEXT = 220  # how much of the text the one-line summary carries
TURN_STATUSES = ("escalated", "deferred")
TURN_PREFIX = "turn"
Kind, Severity = Notification.Kind, Notification.Severity


class NoRecipient(Refusal):
    """Nobody would read the message: the rig's work is finished, or the convoy has no other
    rig with work."""

    code = "no_recipients"
    field = "to"


class NotYourRepository(Refusal):
    """A rig or convoy that exists, but on a repository where the sender has no rig."""

    code = "not_your_repository"
    field = "to"
    status = 403


def _elsewhere(kind: str, ref: str, field: str) -> NotYourRepository:
    return NotYourRepository(
        f"{kind} {ref} works on a repository where you have no rig: agents message rigs of "
        "their own repositories.",
        field=field,
    )


class NotClaimed(Refusal):
    """A release of a bead nobody holds."""

    code = "not_claimed"
    field = "assignee"


class NotAQuestion(Refusal):
    """An answer to a notice that asks no person (only escalations and ended turns do)."""

    code = "not_a_question"
    field = "notification"
    status = 400


class AlreadyAnswered(Refusal):
    """An answer to a notice that is no longer open."""

    code = "already_resolved"
    field = "notification"


def turn_topic(leg_id: int | None) -> str:
    """The topic of a rig's "turn ended" notice: one per leg (`turn` for a rig without one)."""
    return f"{TURN_PREFIX}:{leg_id}" if leg_id else TURN_PREFIX


def text_check(value: Any, field: str, limit: int = MESSAGE_MAX) -> str:
    """A message-like text: a non-blank string of at most `limit` characters (400 naming
    `field` otherwise)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError({field: "say something: this field may not be blank."})
    text = value.strip()
    if len(text) > limit:
        raise ValidationError(
            {field: f"at most {limit:,} characters (this one has {len(text):,})."}
        )
    if "\x00" in text:
        raise ValidationError({field: "may not contain NUL characters."})
    return text


def _line(text: str, size: int = SUMMARY_TEXT) -> str:
    """The first part of a text, on one line, for a summary."""
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[: size - 1] + "…"


def _convoy_ids(rigs: Iterable[Rig]) -> dict[int, int]:
    """The convoy each rig works in now (for the events' convoy group), by rig id."""
    return {
        rig_id: leg.convoy_id
        for rig_id, leg in rigs_current_legs([r.id for r in rigs], dependencies=False).items()
    }


# --- who a message goes to ---------------------------------------------------------------------


def _rig_by_ref(
    ref: int | str, repositories: set[int] | None, field: str, *, by_id: bool = True
) -> Rig | None:
    """A rig by id, or by slug among `repositories` (None: any; two with that slug: 400)."""
    qs = Rig.objects.select_related("repository", "agent")
    if by_id and (isinstance(ref, int) or str(ref).isdigit()):
        return qs.filter(pk=int(ref)).first()
    if repositories is not None:
        qs = qs.filter(repository_id__in=repositories)
    found = list(qs.filter(slug=str(ref)).exclude(state=Rig.State.ARCHIVED)[:2])
    live = Rig.objects.filter(slug=str(ref)).exclude(state=Rig.State.ARCHIVED)
    if not found and repositories is not None and live.exists():
        raise _elsewhere("rig", str(ref), field)
    if len(found) > 1:
        raise ValidationError(
            {field: f"several rigs are called '{ref}' (in different repositories): give its id."}
        )
    return found[0] if found else None


def _agent_rig(name: str, repositories: set[int] | None, field: str) -> Rig | None:
    """The rig of agent `name` a message to it goes to: its live rig with work to do (one with
    a current leg first, then the newest), among `repositories`."""
    agent = Agent.objects.filter(name=name).first()
    if agent is None:
        return None
    rigs = Rig.objects.filter(agent=agent, state__in=Rig.LIVE_STATES).select_related(
        "repository", "agent"
    )
    if repositories is not None:
        rigs = rigs.filter(repository_id__in=repositories)
    rigs = list(rigs.order_by("-created_at", "-id"))
    finished = rigs_finished_work(rigs)
    working = [rig for rig in rigs if rig.id not in finished]
    if not working:
        where = " in your repositories" if repositories is not None else ""
        raise NoRecipient(
            f"agent {name} has no rig with work to do{where}: nobody would read it.", field=field
        )
    legs = rigs_current_legs([rig.id for rig in working], dependencies=False)
    return next((rig for rig in working if rig.id in legs), working[0])


def _convoy_by_ref(
    ref: int | str, repositories: set[int] | None, *, by_id: bool = True, field: str = "to_convoy"
) -> Convoy | None:
    qs = Convoy.objects.all()
    if repositories is not None:
        qs = qs.filter(repository_id__in=repositories)
    if by_id and (isinstance(ref, int) or str(ref).isdigit()):
        return qs.filter(pk=int(ref)).first()
    convoy = qs.filter(slug=str(ref)).first()
    if (
        convoy is None
        and repositories is not None
        and Convoy.objects.filter(slug=str(ref)).exists()
    ):
        raise _elsewhere("convoy", str(ref), field)
    return convoy


def convoy_rigs_with_work(convoy: Convoy) -> list[Rig]:
    """The rigs of a convoy that still have work in it: their leg is open, the rig is live."""
    legs = Leg.objects.filter(
        convoy=convoy, state__in=Leg.OPEN_STATES, rig__state__in=Rig.LIVE_STATES
    ).select_related("rig", "rig__repository", "rig__agent")
    return list({leg.rig_id: leg.rig for leg in legs.order_by("position", "id")}.values())


def message_recipients(
    *,
    to: str | None = None,
    to_rig: int | str | None = None,
    to_agent: str | None = None,
    to_convoy: int | str | None = None,
    repositories: set[int] | None = None,
) -> tuple[list[Rig], str]:
    """The rigs a message goes to, and how it was addressed (`rig api`, `convoy auth`...).

    Exactly one of `to_rig` (id or slug), `to_agent` (name: its rig with work), `to_convoy`
    (id or slug: every rig of it with work) or `to` (any of the three, looked up in that order;
    a name that fits two kinds is a 400). Names are looked up in `repositories` (an agent's;
    None: everywhere). Unknown names are a 400 naming the field."""
    given = {
        name: value
        for name, value in (
            ("to", to),
            ("to_rig", to_rig),
            ("to_agent", to_agent),
            ("to_convoy", to_convoy),
        )
        if value not in (None, "")
    }
    if len(given) != 1:
        raise ValidationError(
            {"to": "give exactly one of to, to_rig, to_agent, to_convoy (who to tell)."}
        )
    ((field, ref),) = given.items()
    ref = ref.strip() if isinstance(ref, str) else ref
    if field == "to":  # by name only: a number would be a rig's id or a convoy's
        found: list[tuple[str, Any]] = []
        ref = str(ref)
        elsewhere: NotYourRepository | None = None  # said only when nothing else has the name
        try:
            if (rig := _rig_by_ref(ref, repositories, field, by_id=False)) is not None:
                found.append(("rig", rig))
        except NotYourRepository as refusal:
            elsewhere = refusal
        if Agent.objects.filter(name=ref).exists():
            found.append(("agent", ref))
        try:
            if (convoy := _convoy_by_ref(ref, repositories, by_id=False, field=field)) is not None:
                found.append(("convoy", convoy))
        except NotYourRepository as refusal:
            elsewhere = elsewhere or refusal
        if len(found) > 1:
            kinds = " and ".join(f"a {kind}" for kind, _ in found)
            raise ValidationError(
                {"to": f"'{ref}' names {kinds}: use to_rig, to_agent or to_convoy "
                 "(`gt send rig:NAME`, `agent:NAME`, `convoy:NAME`)."}
            )  # fmt: skip
        if not found and elsewhere is not None:
            raise elsewhere
        if not found:
            raise ValidationError({"to": f"no rig, agent or convoy called '{ref}'."})
        kind, target = found[0]
        if kind == "rig":
            return [target], f"rig {target.slug}"
        if kind == "convoy":
            return convoy_rigs_with_work(target), f"convoy {target.slug}"
        field = "to_agent"
    if field == "to_rig":
        rig = _rig_by_ref(ref, repositories, field)
        if rig is None:
            raise ValidationError({field: f"rig {ref} does not exist."})
        return [rig], f"rig {rig.slug}"
    if field == "to_agent":
        rig = _agent_rig(str(ref), repositories, field)
        if rig is None:
            raise ValidationError({field: f"agent {ref} does not exist."})
        return [rig], f"agent {ref} (rig {rig.slug})"
    convoy = _convoy_by_ref(ref, repositories)
    if convoy is None:
        raise ValidationError({field: f"convoy {ref} does not exist."})
    return convoy_rigs_with_work(convoy), f"convoy {convoy.slug}"


def reply_address(rig: Rig) -> dict[str, Any]:
    """Where a reply to a notice from `rig` goes: that rig, or, when its work is over (merged,
    archived), its agent's rig with work (`to_agent`), so a reply still reaches whoever asked."""
    over = rig.state in (Rig.State.ARCHIVED, Rig.State.FAILED) or rig.id in rigs_finished_work(
        [rig]
    )
    if over and rig.agent_id is not None:
        return {"to_agent": rig.agent.name}
    return {"to_rig": rig.pk}


# --- messages -----------------------------------------------------------------------------------


@transaction.atomic
def message_send(
    *,
    recipients: list[Rig],
    text: str,
    sender: str,
    from_rig: Rig | None = None,
    reply_to: Notification | None = None,
    addressed: str = "",
    severity: str = Severity.INFO,
    extra: dict[str, Any] | None = None,
) -> list[Notification]:
    """Put a message into each recipient rig's inbox (kind `message`, from `sender`, with
    `from_rig` as its source): a `notification.new` each, on the rig's websocket group and the
    board. The sender's own rig is left out. Refused when nobody is left to read it: a single
    rig whose work is finished (409 `work_finished`), or no rig with work (409
    `no_recipients`)."""
    text = text_check(text, "text")
    # the sender's own rigs are left out (an agent does not message itself)
    rigs = [
        rig
        for rig in recipients
        if from_rig is None
        or (
            rig.pk != from_rig.pk
            and (from_rig.agent_id is None or rig.agent_id != from_rig.agent_id)
        )
    ]
    if not rigs:
        if recipients and not addressed.startswith("convoy"):
            raise ValidationError({"to": "that is you (your own rig): tell another one."})
        raise NoRecipient(
            f"{addressed or 'that'} has no rig with work to do: nobody would read it."
        )
    ended = [rig for rig in rigs if rig.state in (Rig.State.ARCHIVED, Rig.State.FAILED)]
    finished = rigs_finished_work([rig for rig in rigs if rig not in ended])
    if len(rigs) == 1 and (ended or finished):
        rig = rigs[0]
        why = f"is {rig.state}" if ended else f"has finished its work: {finished[rig.id].text()}"
        raise WorkFinished(f"rig {rig.slug} {why}; nobody reads its inbox any more.", field="to")
    rigs = [rig for rig in rigs if rig not in ended and rig.id not in finished]
    convoys = _convoy_ids(rigs)
    where = f" (rig {from_rig.slug})" if from_rig is not None else ""
    changes = {
        "text": text,
        "from": sender,
        "from_rig": from_rig.pk if from_rig is not None else None,
        "from_rig_slug": from_rig.slug if from_rig is not None else None,
        "to": addressed,
        "reply_to": reply_to.pk if reply_to is not None else None,
        **(extra or {}),
    }
    if from_rig is not None:
        hint = (
            f'Reply with `gt send --reply-to <this notice\'s #> "…"` (it goes back to rig '
            f"{from_rig.slug}); `gt ack` it once read."
        )
    else:  # a person wrote it: there is no inbox to reply to
        hint = '`gt ack` it once read; to ask a person back, `gt escalate "…"`.'
    action = f"{text}\n\n{hint}" if len(" ".join(text.split())) > SUMMARY_TEXT else hint
    items = [
        {
            "rig": rig,
            "kind": Kind.MESSAGE,
            "severity": severity,
            "summary": f"{sender}{where}: {_line(text)}",
            "action": action,
            "changes": changes,
            "source_rig": from_rig,
            "convoy_id": convoys.get(rig.id),
            "sender": sender,
            "reply_to": reply_to,
        }
        for rig in rigs
    ]
    return notifications_send_many(items)


# --- escalations, ended turns and their answers --------------------------------------------------


def _ask_action(extra: str = "") -> str:
    return (
        (extra + "\n" if extra else "")
        + "A person answers it on the board (the rig page, or Escalations in the header) or "
        'with `POST /api/v1/notifications/<id>/answer/ {"answer": "…"}`; the answer reaches '
        "the agent's inbox as a message."
    )


@transaction.atomic
def escalation_raise(
    *, rig: Rig, text: str, agent: Agent, bead: Bead | None = None
) -> Notification:
    """An agent asks a person (`gt escalate`): a critical `escalation` notice on its rig, shown
    on the rig page, the convoy page and the board's header, and sent to the webhooks."""
    text = text_check(text, "text")
    about = f" about {bead.short_id} ({_line(bead.title, 60)})" if bead is not None else ""
    leg = rig_current_leg(rig)
    long = len(" ".join(text.split())) > SUMMARY_TEXT
    notice = notification_send(
        rig=rig,
        kind=Kind.ESCALATION,
        severity=Severity.CRITICAL,
        summary=f"{agent.name} (rig {rig.slug}) asks{about}: {_line(text)}",
        action=_ask_action(text if long else ""),
        changes={
            "question": text,
            "asked_by": agent.name,
            "bead": bead.short_id if bead is not None else None,
            "bead_id": bead.pk if bead is not None else None,
        },
        source_rig=rig,
        sender=agent.name,
        convoy_id=leg.convoy_id if leg is not None else None,
    )
    if notice is None:
        raise ValidationError({"rig": f"rig {rig.slug} is archived."})
    return notice


@transaction.atomic
def rig_turn_end(*, rig: Rig, status: str, reason: str, by: str) -> Notification:
    """The rig's agent ends its turn without a merge (`gt done --status escalated|deferred`):
    an open notice on the topic `turn:<leg>` (critical `escalation`, or a `deferred` warning)
    shown on the rig page, its leg on the convoy page and the board's header, and a
    `rig.turn_ended` event. The runner does not relaunch the agent for that leg until a person
    acts: answers the notice (`notice_answer`) or launches the agent."""
    if status not in TURN_STATUSES:
        raise ValidationError({"status": f"'{status}' is not one of {', '.join(TURN_STATUSES)}."})
    reason = text_check(reason, "reason", REASON_MAX)
    leg = rig_current_leg(rig)
    if leg is None and (finished := rigs_finished_work([rig]).get(rig.id)) is not None:
        raise WorkFinished(
            f"rig {rig.slug}'s work is finished: {finished.text()}. There is no turn to end."
        )
    escalated = status == "escalated"
    on = f" on leg {leg.key}" if leg is not None else ""
    notice = notification_send(
        rig=rig,
        kind=Kind.ESCALATION if escalated else Kind.DEFERRED,
        severity=Severity.CRITICAL if escalated else Severity.WARNING,
        summary=f"{by} ended its turn in rig {rig.slug}{on} ({status}): {_line(reason)}",
        action=_ask_action(
            (reason + "\n" if len(" ".join(reason.split())) > SUMMARY_TEXT else "")
            + "The runner does not relaunch the agent until a person answers this notice or "
            "launches the agent."
        ),
        changes={"status": status, "reason": reason, "question": reason, "asked_by": by,
                 "leg": leg.key if leg is not None else None},
        topic=turn_topic(leg.pk if leg is not None else None),
        source_rig=rig,
        sender=by,
        convoy_id=leg.convoy_id if leg is not None else None,
    )  # fmt: skip
    if notice is None:
        raise ValidationError({"rig": f"rig {rig.slug} is archived."})
    event_append(
        "rig.turn_ended",
        {
            "rig": rig.pk,
            "slug": rig.slug,
            "status": status,
            "reason": _line(reason),
            "notification": notice.pk,
        },
        repository_id=rig.repository_id,
        convoy_id=leg.convoy_id if leg is not None else None,
        rig_id=rig.pk,
    )
    return notice


def turn_notices_resolve(*, rig: Rig, resolution: str) -> int:
    """Close the rig's open "turn ended" notices: a person acted (launched its agent)."""
    return notices_resolve(
        notifications=Notification.objects.filter(rig=rig).filter(
            Q(topic=TURN_PREFIX) | Q(topic__startswith=f"{TURN_PREFIX}:")
        ),
        resolution=resolution,
    )


@transaction.atomic
def notice_answer(
    *, notification: Notification, answer: str, by: str
) -> tuple[Notification, Notification | None]:
    """A person answers an escalation or an ended turn: the answer goes to the rig's inbox as
    a `message` replying to it (a warning: it asks the agent to go on), and the notice is
    resolved with the answer. Returns (the resolved notice, the reply; None when the rig was
    archived meanwhile)."""
    answer = text_check(answer, "answer")
    notice = (
        Notification.objects.select_for_update(of=("self",))
        .select_related("rig")
        .get(pk=notification.pk)
    )
    if notice.kind not in ASKS_PERSON_KINDS:
        raise NotAQuestion(
            f"notification #{notice.pk} is a {notice.get_kind_display()} notice: it asks no "
            "person. Only escalations and ended turns are answered."
        )
    if notice.state != Notification.State.OPEN:
        done = f": {notice.resolution.rstrip('.')}" if notice.resolution else ""
        raise AlreadyAnswered(
            f"notification #{notice.pk} is already {notice.state}{done}.",
            code=f"already_{notice.state}",
        )
    rig = notice.rig
    leg = rig_current_leg(rig)
    question = notice.changes.get("question") or notice.summary
    reply = notification_send(
        rig=rig,
        kind=Kind.MESSAGE,
        severity=Severity.WARNING,
        summary=f"{by} answered #{notice.pk}: {_line(answer)}",
        action=(
            (answer + "\n\n" if len(" ".join(answer.split())) > SUMMARY_TEXT else "")
            + f"You asked: {_line(question, 300)}\nGo on with this answer; `gt ack` it once read."
        ),
        changes={"text": answer, "from": by, "answers": notice.pk, "question": question},
        sender=by,
        reply_to=notice,
        convoy_id=leg.convoy_id if leg is not None else None,
    )
    notices_resolve(
        notifications=Notification.objects.filter(pk=notice.pk),
        resolution=f"answered by {by}: {_line(answer, 250)}",
    )
    notice.refresh_from_db()
    return notice, reply


# --- beads: comments, releasing a claim ------------------------------------------------------


def bead_repository_id(bead: Bead) -> int | None:
    """The repository a bead's work is on (its rig's, its pool's, its convoy's)."""
    return _bead_repository_id(bead)


@transaction.atomic
def bead_comment_add(
    *, bead: Bead, text: str, agent: Agent | None = None, user: Any = None
) -> BeadComment:
    """A comment on a bead (by an agent, or a person), with a `bead.commented` event. When it
    is written by someone else than the agent of the bead's rig, that rig is told (a message
    in its inbox), unless its work is finished."""
    text = text_check(text, "text")
    author = agent.name if agent is not None else (user.get_username() if user else "")
    if not author:
        raise ValidationError({"author": "a comment needs an author."})
    comment = BeadComment.objects.create(
        bead=bead,
        author_agent=agent,
        author_user=user if agent is None else None,
        author=author,
        text=text,
    )
    bead_event(
        "bead.commented", bead, {"bead": bead.short_id, "comment": comment.pk, "author": author}
    )
    rig = bead.rig
    if rig is not None and (agent is None or rig.agent_id != agent.pk):
        live = rig.state in Rig.LIVE_STATES or rig.state in (
            Rig.State.REQUESTED,
            Rig.State.PROVISIONING,
        )
        if live and not rigs_finished_work([rig]):
            notification_send(
                rig=rig,
                kind=Kind.MESSAGE,
                severity=Severity.INFO,
                summary=f"{author} commented on {bead.short_id} ({_line(bead.title, 60)}): "
                f"{_line(text, 150)}",
                action=f"Read it with `gt show {bead.short_id}`; `gt comment {bead.short_id} "
                '"…"` to answer.',
                changes={"bead": bead.short_id, "comment": comment.pk, "from": author},
                sender=author,
                convoy_id=_convoy_ids([rig]).get(rig.pk),
            )
    return comment


@transaction.atomic
def bead_release(*, bead: Bead, by: str, holder: Agent | None = None) -> Bead:
    """Give a claim up (`gt release`): an in-progress bead goes back to open with no assignee,
    claim time or lease (and back to its pool when the claim took it from one, so that another
    agent may claim it); a bead assigned but not started just loses its assignee. With
    `holder`, only while that agent holds it. The row is locked, then one conditional UPDATE
    checked by row count, so a racing claim, lapse or release is refused, never lost. A
    `bead.released` event. 409 `not_claimed` when nobody holds it."""
    now = timezone.now()
    before = (
        Bead.objects.select_for_update(of=("self",))
        .select_related("assignee", "rig")
        .filter(pk=bead.pk)
        .first()
    )
    if before is None or before.assignee_id is None or before.status == Bead.Status.CLOSED:
        state = before.status if before is not None else "gone"
        raise NotClaimed(f"{bead.short_id} is not claimed (it is {state}): nothing to release.")
    if holder is not None and before.assignee_id != holder.pk:
        raise NotClaimed(f"{bead.short_id} is held by {before.assignee.name}, not {holder.name}.")
    if before.status == Bead.Status.IN_PROGRESS:
        values = claim_end_values(before, now)
    else:
        values = {"assignee": None, "claimed_at": None, "updated_at": now}
    rows = Bead.objects.filter(pk=bead.pk, assignee_id=before.assignee_id, status=before.status)
    if rows.update(**values) != 1:
        raise NotClaimed(f"{bead.short_id} changed meanwhile: look again.")
    bead.refresh_from_db()
    bead_event(
        "bead.released",
        bead,
        {
            "bead": bead.short_id,
            "title": bead.title,
            "agent": before.assignee.name,
            "from": before.status,
            "to": bead.status,
            "by": by,
            "to_pool": "rig" in values,
        },
    )
    return bead
