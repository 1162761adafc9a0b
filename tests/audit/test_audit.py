"""`manage.py audit` on real repositories: a convoy lands for real and the audit is clean; then
each kind of violation is made for real (a branch moved by hand, a commit collected, the target
rewound or pushed to, a landing forged twice, a failed gate, two holders, a dead queue holder, a
worktree removed, a state changed behind the services' back) and is reported with its ids and
commits; `--repair` fixes what needs no judgement and says what needs a person."""

import io
import json
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.checks import audit_run
from convoys import services as convoy_services
from convoys.models import Bead, Convoy, Leg
from rigs import git, merge_queue, operations, services
from rigs.models import MergeQueueLease, MergeRequest, Rig
from runner.models import AgentRun
from tests import factories
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file, register, rig_land, rig_ready

pytestmark = pytest.mark.django_db(transaction=True)
S = MergeRequest.State


def work(rig: Rig, path: str, text: str) -> str:
    sha = commit_file(Path(rig.worktree_path), path, text, f"{rig.slug}: {path}")
    operations.rig_sync_run(rig.id)
    rig.refresh_from_db()
    return sha


def codes(report) -> list[str]:
    return sorted(v.code for v in report.violations)


@pytest.fixture
def landed(git_repo):
    """A convoy of two legs (api, then ui) landed by the real merge queue with a gate, and a
    third rig (wip) with a commit of its own not merged yet."""
    repository = register(git_repo, gate_command="test -f README.md")
    api, ui, wip = (rig_ready(repository, slug) for slug in ("api", "ui", "wip"))
    convoy = convoy_services.convoy_create(
        title="Auth",
        repository=repository,
        target_branch="main",
        legs=[
            {"key": "api", "title": "API", "rig": api},
            {"key": "ui", "title": "UI", "rig": ui, "depends_on": ["api"]},
        ],
    )
    convoy_services.convoy_launch(convoy=convoy)
    work(api, "auth/api.py", "def login(): ...\n")
    mrs = [rig_land(api)]
    work(ui, "ui/login.js", "login()\n")
    mrs.append(rig_land(ui))
    wip_head = work(wip, "wip.txt", "half done\n")
    convoy.refresh_from_db()
    assert convoy.state == Convoy.State.LANDED
    return {
        "repository": repository,
        "repo": git_repo,
        "convoy": convoy,
        "rigs": {"api": api, "ui": ui, "wip": wip},
        "mrs": mrs,
        "wip_head": wip_head,
    }


def test_a_landed_convoy_audits_clean_and_the_command_says_so(landed):
    report = audit_run()
    assert report.clean, report.text()
    assert report.checked == {"repositories": 1, "rigs": 3, "merged requests": 2}
    out = io.StringIO()
    call_command("audit", stdout=out)
    assert "Audit clean: checked 1 repositories, 3 rigs, 2 merged requests" in out.getvalue()
    out = io.StringIO()
    call_command("audit", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["clean"] is True and data["violations"] == []


def test_the_audit_costs_the_same_queries_and_git_calls_with_more_rigs(landed):
    with CaptureQueriesContext(connection) as few:
        small = audit_run()
    for i in range(4):
        rig = rig_ready(landed["repository"], f"more{i}")
        work(rig, f"more{i}.txt", "x\n")
        rig_land(rig)
    with CaptureQueriesContext(connection) as many:
        big = audit_run()
    assert big.clean, big.text()
    assert len(many) == len(few), [q["sql"][:80] for q in many.captured_queries]
    assert big.git_calls == small.git_calls


def test_a_branch_moved_by_hand_loses_work_until_the_repair_archives_it(landed):
    wip, repo = landed["rigs"]["wip"], landed["repo"]
    head = landed["wip_head"]
    run_git(Path(wip.worktree_path), "reset", "-q", "--hard", "HEAD~1")  # a person's mistake

    report = audit_run()
    assert codes(report) == ["commit_unreachable"]
    lost = report.violations[0]
    assert lost.invariant == "lost_work" and lost.commits == [head]
    assert lost.ids["rig"] == "wip" and lost.ids["repository"] == "app"
    assert head[:12] in lost.line()

    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("audit", stdout=out)
    assert exit_.value.code == 1 and "commit_unreachable" in out.getvalue()

    repaired = audit_run(repair=True)
    assert repaired.clean, repaired.text()
    assert [v.code for v in repaired.repaired] == ["commit_unreachable"]
    ref = f"refs/gastown/archive/wip/recovered-{head[:12]}"
    assert git.rev_parse(repo, ref) == head


def test_a_commit_gone_from_the_repository_needs_a_person(landed):
    wip, repo = landed["rigs"]["wip"], landed["repo"]
    run_git(Path(wip.worktree_path), "reset", "-q", "--hard", "HEAD~1")
    run_git(repo, "reflog", "expire", "--expire=now", "--all")
    run_git(repo, "gc", "-q", "--prune=now")
    report = audit_run(repair=True)
    assert codes(report) == ["commit_missing"]
    assert report.violations[0].commits == [landed["wip_head"]]
    assert "restore" in report.violations[0].needs_person


def test_a_target_rewound_by_hand_loses_the_landings_and_the_convoy(landed):
    repo = landed["repo"]
    first = landed["mrs"][0]
    run_git(repo, "update-ref", "refs/heads/main", first.target_commit)
    report = audit_run()
    assert (
        codes(report)
        == ["commit_unreachable"] * 2 + ["leg_not_on_target"] * 2 + ["merge_not_on_target"] * 2
    )
    merges = sorted(mr.merge_commit for mr in landed["mrs"])
    legs = {v.ids["leg"]: v for v in report.violations if v.code == "leg_not_on_target"}
    assert set(legs) == {"api", "ui"} and legs["api"].ids["convoy"] == landed["convoy"].slug
    off = sorted(v.commits[0] for v in report.violations if v.code == "merge_not_on_target")
    assert off == merges
    # the landed commits themselves are kept (archived); landing them again is a person's call
    repaired = audit_run(repair=True)
    assert codes(repaired) == ["leg_not_on_target"] * 2 + ["merge_not_on_target"] * 2
    assert all(v.needs_person for v in repaired.violations)
    kept = git.refs_under(repo, "refs/gastown/archive/")
    assert sorted(kept.values()) == merges


def test_a_commit_pushed_on_the_target_by_hand_is_an_unrecorded_publish(landed):
    sha = commit_file(landed["repo"], "hotfix.txt", "x\n", "hotfix")
    report = audit_run()
    assert codes(report) == ["unrecorded_publish"]
    assert report.violations[0].commits == [sha]
    assert report.violations[0].ids == {"repository": "app", "target": "main"}


def test_a_landing_published_twice_is_a_double_publish(landed):
    repo, mr = landed["repo"], landed["mrs"][1]
    tip = git.resolve_branch(repo, "main")
    again = git.commit_tree(repo, git.tree_of(repo, tip), [tip, mr.source_commit], "again")
    git.update_ref(repo, "refs/heads/main", again, tip)
    twin = MergeRequest.objects.create(
        repository=mr.repository,
        rig=mr.rig,
        source_branch="rig/other",
        target_branch="main",
        source_commit=mr.source_commit,
        target_commit=tip,
        merge_commit=again,
        gate_exit_code=0,
        state=S.MERGED,
    )
    report = audit_run()
    found = {v.code: v for v in report.violations}
    assert set(found) == {"double_publish", "state_without_event"}
    assert found["double_publish"].ids["merge_requests"] == [mr.id, twin.id]
    assert found["double_publish"].commits == [mr.merge_commit, again]


def test_a_landing_whose_gate_failed_is_reported(landed):
    mr = landed["mrs"][0]
    MergeRequest.objects.filter(pk=mr.pk).update(gate_exit_code=1)
    report = audit_run()
    assert codes(report) == ["ungated_landing"]
    assert report.violations[0].ids["merge_request"] == mr.id


def test_two_holders_and_a_dead_holder_of_a_bead(landed):
    a, b = factories.agent(name="ann"), factories.agent(name="bob")
    rig = landed["rigs"]["wip"]
    run = AgentRun.objects.create(rig=rig, agent=b, state=AgentRun.State.RUNNING, command="x")
    soon = timezone.now() + timedelta(minutes=5)
    forged = Bead.objects.create(
        rig=rig, title="forged", short_id="gt-forged", status=Bead.Status.IN_PROGRESS,
        assignee=a, claimed_by_run_id=run.id, lease_expires_at=soon,
    )  # fmt: skip
    ended = AgentRun.objects.create(
        rig=landed["rigs"]["api"], agent=a, state=AgentRun.State.FAILED, command="x"
    )
    orphan = Bead.objects.create(
        rig=landed["rigs"]["api"], title="orphan", short_id="gt-orphan",
        status=Bead.Status.IN_PROGRESS, assignee=a, claimed_by_run_id=ended.id,
        lease_expires_at=soon,
    )  # fmt: skip
    report = audit_run()
    assert codes(report) == ["bead_two_holders", "claim_held_by_ended_run"]
    two = next(v for v in report.violations if v.code == "bead_two_holders")
    assert two.ids == {"bead": "gt-forged", "run": run.id, "agents": [a.id, b.id]}

    repaired = audit_run(repair=True)
    assert codes(repaired) == ["bead_two_holders"]  # a person decides who does the work
    assert [v.code for v in repaired.repaired] == ["claim_held_by_ended_run"]
    orphan.refresh_from_db()
    forged.refresh_from_db()
    assert orphan.status == Bead.Status.OPEN and orphan.assignee is None
    assert forged.status == Bead.Status.IN_PROGRESS


def test_a_dead_workers_lease_and_stranded_request_are_recovered(landed):
    repository = landed["repository"]
    wip = landed["rigs"]["wip"]
    with transaction.atomic():
        mr = services.merge_request_create(
            repository=repository, source_branch=wip.branch, target_branch="main", rig=wip
        )
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid of this machine that is gone
    holder = f"{os.uname().nodename}:{dead.pid}:abc123"
    MergeQueueLease.objects.create(
        repository=repository,
        target_branch="main",
        holder=holder,
        expires_at=timezone.now() + timedelta(minutes=20),
    )
    services.merge_request_transition(merge_request=mr, to=S.CHECKING, claimed_by=holder)
    report = audit_run()
    assert codes(report) == ["merge_request_stranded", "queue_lease_dead_holder"]

    repaired = audit_run(repair=True)
    assert repaired.clean, repaired.text()
    mr.refresh_from_db()
    assert mr.state == S.QUEUED and not MergeQueueLease.objects.exists()
    # and the queue lands it (the re-queued task, or the periodic kick)
    merge_queue.merge_queue_process(repository.id, "main")
    mr.refresh_from_db()
    assert mr.state == S.MERGED
    assert audit_run().clean


def test_worktrees_missing_or_orphaned(landed, settings):
    repository, api = landed["repository"], landed["rigs"]["api"]
    shutil.rmtree(api.worktree_path)
    orphan = Path(settings.GASTOWN_WORKTREE_ROOT) / "app" / "stray"
    run_git(landed["repo"], "worktree", "add", "-q", "-b", "stray", str(orphan), "main")
    report = audit_run()
    assert codes(report) == ["orphan_worktree", "worktree_missing"]
    repaired = audit_run(repair=True)
    assert codes(repaired) == ["orphan_worktree"] and repaired.violations[0].needs_person
    assert (Path(api.worktree_path) / "auth" / "api.py").is_file()
    assert repository.rigs.count() == 3


def test_a_state_changed_behind_the_services_back_gets_its_event(landed):
    wip = landed["rigs"]["wip"]
    Rig.objects.filter(pk=wip.pk).update(state=Rig.State.STALLED)
    report = audit_run()
    assert codes(report) == ["state_without_event"]
    assert report.violations[0].ids["last_seen"] == "ready"
    assert audit_run(repair=True).clean


def test_a_landed_convoys_leg_that_did_not_land(landed):
    leg = Leg.objects.get(convoy=landed["convoy"], key="ui")
    Leg.objects.filter(pk=leg.pk).update(state=Leg.State.WORKING)
    report = audit_run()
    assert codes(report) == ["leg_not_landed"]
    assert report.violations[0].ids == {"convoy": landed["convoy"].slug, "leg": "ui"}


def test_a_provision_whose_task_was_lost_is_queued_again(landed, monkeypatch):
    with transaction.atomic():
        rig = services.rig_request(repository=landed["repository"], slug="late")
    Rig.objects.filter(pk=rig.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    report = audit_run()
    assert codes(report) == ["provision_stranded"]
    sent = []
    monkeypatch.setattr(
        "rigs.tasks.rig_provision.apply_async", lambda args, **kw: sent.append(args)
    )
    repaired = audit_run(repair=True)
    assert sent == [(rig.id,)]
    assert repaired.violations[0].note == "re-queued: a worker finishes it"


def test_a_landing_published_but_not_recorded_is_stranded_not_unrecorded(landed, monkeypatch):
    """A worker died between `update-ref` and the record: the target's new step is explained by
    what the queue wrote before publishing; the request is stranded until the queue recovers
    it, which the repair does (recording the landing as it was)."""

    class Killed(BaseException):
        pass

    def die(point):
        if point == "merge.after_update_ref":
            raise Killed

    wip = landed["rigs"]["wip"]
    with transaction.atomic():
        mr = services.merge_request_create(
            repository=wip.repository, source_branch=wip.branch, target_branch="main", rig=wip
        )
    monkeypatch.setattr(merge_queue, "fault_point", die)
    with pytest.raises(Killed):
        merge_queue.merge_queue_process(wip.repository_id, "main")
    monkeypatch.undo()
    report = audit_run()
    assert codes(report) == ["merge_request_stranded"]
    repaired = audit_run(repair=True)
    assert repaired.clean, repaired.text()
    mr.refresh_from_db()
    assert mr.state == S.MERGED and mr.merge_commit == git.resolve_branch(landed["repo"], "main")


def test_a_request_awaiting_review_is_not_stranded(landed):
    """It waits for a person, not a worker: no lease, no claim, and no violation however long."""
    wip = landed["rigs"]["wip"]
    with transaction.atomic():
        mr = services.merge_request_create(
            repository=wip.repository,
            source_branch=wip.branch,
            target_branch="main",
            rig=wip,
            reviews_required=1,
        )
    MergeRequest.objects.filter(pk=mr.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert mr.state == S.AWAITING_REVIEW
    report = audit_run()
    assert report.clean, report.text()
