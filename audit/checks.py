"""`manage.py audit`: the invariants that say nothing was lost, checked against the database and
the disk (issue 18). `audit_run()` is what the command, the fault tests, the soak and a restore's
test call; it returns an `AuditReport` (clean when it holds no violation).

The invariants (each violation names its `invariant` and a `code`):

- `lost_work`: every commit recorded as a rig's head (and every merged request's source) is a
  commit of its repository that its branch, a target or an archive ref reaches, or that landed;
- `landing`: every merged request's commit is on its target, and every step of a target's
  first-parent line since the first recorded landing is explained by exactly one landing (no
  double publish, no unrecorded publish);
- `gate`: no target moved to a commit whose gate did not pass (when the repository has a gate);
- `holders`: no bead has two holders (or a dead one), no rig two active runs, no queue two leases
  (or a dead holder's), no merge request stranded in checking/testing, nothing left unqueued;
- `worktree`: every live rig's worktree is on disk on its branch; no worktree without a rig;
- `events`: every rig's and merge request's state is the last one its events say (a client that
  replays the log ends where the database is); no event deleted (SQLite, where ids are dense);
- `convoy`: a landed convoy's legs are all merged into its target.

Cost: a fixed number of queries whatever the size (about 15), and a fixed number of git
processes per repository (5, plus 2 per target branch with landings): docs/benchmarks.md.

`repair=True` fixes what needs no judgement (a lost commit archived, a stranded queue recovered,
a dead holder's lease released, a dead run's claims returned, an overdue lease swept, a missing
worktree checked out again, a missing state event appended, a lost task enqueued again), then
audits again: what is still there is reported with what a person must do.
"""

import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max
from django.db.models.fields.json import KT
from django.utils import timezone

from audit import services as audit_services
from convoys.models import Bead, Convoy, Leg
from convoys.services import leases
from events.models import Event
from rigs import git, merge_queue, operations, tasks
from rigs.models import MergeQueueLease, MergeRequest, Repository, Rig
from runner.models import AgentRun

logger = logging.getLogger(__name__)

MR = MergeRequest.State
# How long something may wait for its periodic safety net before it counts as stuck.
QUEUED_GRACE_SECONDS = 120  # merge_queues_kick runs every 30 s
PROVISION_GRACE_SECONDS = 180  # rig_provisions_kick every 60 s, after 60 s without progress
LEASE_SWEEP_GRACE_SECONDS = 90  # bead_leases_expire every 30 s
ARCHIVE_PREFIX = "refs/gastown/archive/"
# Repairs that hand the work to a worker (still reported until one has done it).
REQUEUED = ("provision_stranded", "merge_request_waiting", "merge_request_stranded")


@dataclass
class Violation:
    invariant: str
    code: str
    message: str
    ids: dict[str, Any] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)
    needs_person: str = ""  # what a person must do ("" when --repair can fix it)
    repaired: bool = False
    note: str = ""  # what --repair did when the fix is a worker's to finish

    @property
    def key(self) -> tuple:
        ids = tuple(sorted((k, str(v)) for k, v in self.ids.items()))
        return (self.code, ids, tuple(self.commits))

    def line(self) -> str:
        ids = " ".join(f"{k}={v}" for k, v in self.ids.items())
        commits = f" commits {', '.join(c[:12] for c in self.commits)}" if self.commits else ""
        note = f" [{self.note}]" if self.note else ""
        return f"[{self.invariant}] {self.code}: {self.message} ({ids}{commits}){note}"


@dataclass
class AuditReport:
    violations: list[Violation] = field(default_factory=list)
    repaired: list[Violation] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    queries: int | None = None
    git_calls: int = 0

    @property
    def clean(self) -> bool:
        return not self.violations

    def add(self, invariant: str, code: str, message: str, **kw: Any) -> None:
        self.violations.append(Violation(invariant, code, message, **kw))

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "violations": [asdict(v) for v in self.violations],
            "repaired": [asdict(v) for v in self.repaired],
            "checked": self.checked,
            "seconds": round(self.seconds, 3),
            "git_calls": self.git_calls,
        }

    def text(self) -> str:
        lines = [
            v.line() + (f"\n    needs a person: {v.needs_person}" if v.needs_person else "")
            for v in self.violations
        ]
        lines += [f"[repaired] {v.line()}" for v in self.repaired]
        counts = ", ".join(f"{n} {what}" for what, n in self.checked.items())
        verdict = "clean" if self.clean else f"{len(self.violations)} violation(s)"
        lines.append(f"Audit {verdict}: checked {counts} in {self.seconds:.2f} s.")
        return "\n".join(lines)


class _GitCounter:
    """Counts the git processes one audit starts (the benchmark's second number)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            self.calls += 1
            return fn(*args, **kwargs)

        return wrapped


# --- the run ---------------------------------------------------------------------------------


def audit_run(*, repair: bool = False, now=None) -> AuditReport:
    """Check every invariant; with `repair`, fix what needs no judgement and audit again."""
    started = time.monotonic()
    queries_before = len(connection.queries) if settings.DEBUG else None
    report = _audit_confirmed(now=now)
    if repair and report.violations:
        _repair(report)
        again = _audit_confirmed(now=now)
        before = {v.key: v for v in report.violations}
        after = {v.key for v in again.violations}
        again.repaired = [v for k, v in before.items() if k not in after]
        for v in again.repaired:
            v.repaired = True
        for v in again.violations:
            if v.code in REQUEUED:
                v.note = "re-queued: a worker finishes it"
        again.git_calls += report.git_calls
        report = again
    report.seconds = time.monotonic() - started
    if queries_before is not None:
        report.queries = len(connection.queries) - queries_before
    return report


def _audit_confirmed(*, now=None) -> AuditReport:
    """An audit of a live installation reads the database and the disk one after the other: a
    change between two reads (a run ending between the beads and the runs, a state moving
    between the rig and its events) can look like a violation for a moment. So a violation
    counts only when a second pass finds it too (a clean installation costs one pass)."""
    first = _audit(now=now)
    if not first.violations:
        return first
    second = _audit(now=now)
    confirmed = {v.key for v in first.violations}
    second.violations = [v for v in second.violations if v.key in confirmed]
    second.git_calls += first.git_calls
    return second


def _audit(*, now=None) -> AuditReport:
    now = now or timezone.now()
    report = AuditReport()
    counter = _GitCounter()
    g = _Git(counter)
    repositories = list(Repository.objects.all())
    rigs = list(Rig.objects.all())
    # what the queue wrote before publishing (explains a target step not recorded yet)
    publishing = list(
        MergeRequest.objects.filter(state__in=(MR.CHECKING, MR.TESTING))
        .exclude(merge_commit="")
        .exclude(target_commit="")
        .only("id", "repository_id", "target_branch", "merge_commit", "target_commit")
    )
    merged = list(
        MergeRequest.objects.filter(state=MR.MERGED).only(
            "id",
            "repository_id",
            "rig_id",
            "target_branch",
            "source_commit",
            "target_commit",
            "merge_commit",
            "gate_exit_code",
            "finished_at",
            "priority",
            "created_at",
        )
    )
    rigs_by_repo: dict[int, list[Rig]] = defaultdict(list)
    for rig in rigs:
        rigs_by_repo[rig.repository_id].append(rig)
    merged_by_repo: dict[int, list[MergeRequest]] = defaultdict(list)
    for mr in merged:
        merged_by_repo[mr.repository_id].append(mr)
    publishing_by_repo: dict[int, list[MergeRequest]] = defaultdict(list)
    for mr in publishing:
        publishing_by_repo[mr.repository_id].append(mr)
    convoy_commits = _convoys_check(report)
    gate_changed = _gate_changes()
    for repository in repositories:
        _repository_check(
            report,
            g,
            repository,
            rigs_by_repo[repository.id],
            merged_by_repo[repository.id],
            publishing_by_repo[repository.id],
            convoy_commits.get(repository.id, {}),
            gate_changed.get(repository.id, repository.created_at),
        )
    _holders_check(report, now)
    _events_check(report, rigs)
    report.checked = {
        "repositories": len(repositories),
        "rigs": len(rigs),
        "merged requests": len(merged),
    }
    report.git_calls = counter.calls
    return report


class _Git:
    """The git reads the audit makes, counted."""

    def __init__(self, counter: _GitCounter) -> None:
        for name in (
            "refs_under",
            "commits_missing",
            "commits_unreachable",
            "first_parent_line",
            "worktree_list",
            "is_repository",
        ):
            setattr(self, name, counter(getattr(git, name)))


# --- git: lost work, landings, gates, worktrees ------------------------------------------------


def _repository_check(
    report: AuditReport,
    g: _Git,
    repository: Repository,
    rigs: list[Rig],
    merged: list[MergeRequest],
    publishing: list[MergeRequest],
    convoy_commits: dict[str, dict[str, dict]],
    gate_since,
) -> None:
    repo = repository.path
    rid = {"repository": repository.name}
    if not Path(repo).is_dir() or not g.is_repository(repo):
        report.add(
            "lost_work",
            "repository_missing",
            f"{repo} is not a git repository",
            ids=rid,
            needs_person="restore it (manage.py restore) or point the repository at its path",
        )
        return
    refs = g.refs_under(repo, "refs/heads/", ARCHIVE_PREFIX)
    targets = {repository.target_branch} | {mr.target_branch for mr in merged}
    targets |= set(convoy_commits)
    keep = [
        name
        for name in refs
        if name.startswith(ARCHIVE_PREFIX)
        or name.removeprefix("refs/heads/") in targets
        or name.removeprefix("refs/heads/") in {r.branch for r in rigs}
    ]

    # every recorded commit must exist
    recorded: dict[str, list[tuple[str, Any]]] = defaultdict(list)  # sha -> [(what, obj)]
    for rig in rigs:
        if rig.head_commit:
            recorded[rig.head_commit].append(("rig", rig))
    for mr in merged:
        for sha in (mr.source_commit, mr.merge_commit):
            if sha:
                recorded[sha].append(("merge_request", mr))
    missing = g.commits_missing(repo, recorded)
    for sha in sorted(missing):
        for what, obj in recorded[sha]:
            ids = {**rid, what: obj.slug if what == "rig" else obj.id}
            report.add(
                "lost_work",
                "commit_missing",
                f"{what} {ids[what]} records commit {sha[:12]}, which the repository does not "
                "have (history rewritten and collected?)",
                ids=ids,
                commits=[sha],
                needs_person="restore the repository from a backup (manage.py restore) or "
                "redo the work; the audit cannot bring an object back",
            )

    # merged requests' commits on their targets (and landed convoys' legs)
    by_target: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for mr in merged:
        if mr.merge_commit and mr.merge_commit not in missing:
            by_target[mr.target_branch][mr.merge_commit].append({**rid, "merge_request": mr.id})
    for target, commits in convoy_commits.items():
        for sha, ids in commits.items():
            if sha not in missing:
                by_target[target][sha].append({**rid, **ids})
    landed_ok: set[str] = set()
    for target, commits in sorted(by_target.items()):
        tip_ref = f"refs/heads/{target}"
        if tip_ref not in refs:
            # an integration branch removed after its convoy landed: its landings are on the
            # repository's target
            tip_ref = f"refs/heads/{repository.target_branch}"
        off = (
            g.commits_unreachable(repo, list(commits), [tip_ref])
            if tip_ref in refs
            else set(commits)
        )
        landed_ok |= set(commits) - off
        for sha, ids in [(s, i) for s in sorted(off) for i in commits[s]]:
            what = "leg" if "leg" in ids else "merge request"
            report.add(
                "convoy" if "leg" in ids else "landing",
                "leg_not_on_target" if "leg" in ids else "merge_not_on_target",
                f"{what} {ids.get('leg') or ids.get('merge_request')} is recorded as landed at "
                f"{sha[:12]}, which {target} does not reach",
                ids=ids,
                commits=[sha],
                needs_person=f"find out who moved {target} back (git reflog) and land it again",
            )

    # recorded heads: reachable from a branch, a target or an archive ref, or landed
    landed_sources = {
        mr.source_commit for mr in merged if mr.merge_commit in landed_ok and mr.source_commit
    }
    heads = [s for s in recorded if s not in missing]
    lost = g.commits_unreachable(repo, heads, keep) if heads else set()
    for sha in sorted(lost - landed_sources - landed_ok):
        for what, obj in recorded[sha]:
            label = obj.slug if what == "rig" else f"mr-{obj.id}"
            ids = {**rid, what: obj.slug if what == "rig" else obj.id}
            report.add(
                "lost_work",
                "commit_unreachable",
                f"{what} {ids[what]}'s commit {sha[:12]} is reached by no branch, target or "
                "archive ref (a branch moved or deleted by hand?)",
                ids={**ids, "keep_as": label},
                commits=[sha],
            )

    for target in sorted({mr.target_branch for mr in merged}):
        tip = refs.get(f"refs/heads/{target}")
        if tip is not None:
            _landing_line_check(
                report,
                g,
                repository,
                target,
                tip,
                [mr for mr in merged if mr.target_branch == target],
                [mr for mr in publishing if mr.target_branch == target],
                gate_since,
            )
    _worktrees_check(report, g, repository, rigs, refs)


def _landing_line_check(
    report: AuditReport,
    g: _Git,
    repository: Repository,
    target: str,
    tip: str,
    merged: list[MergeRequest],
    publishing: list[MergeRequest],
    gate_since,
) -> None:
    """Each step of the target's first-parent line since its first recorded landing must be a
    landing's merge commit (or, for the rebase strategy, a commit it replayed), or what a
    request being landed wrote it would publish (recorded in a moment, or by the next run when
    its worker died: the holders check says so)."""
    rid = {"repository": repository.name, "target": target}
    moves: dict[str, MergeRequest] = {}
    sources: dict[str, MergeRequest] = {}
    for mr in sorted(merged, key=lambda m: (m.finished_at or m.created_at, m.id)):
        if not (mr.merge_commit and mr.target_commit) or mr.merge_commit == mr.target_commit:
            continue  # landed as it was: its work was on the target already
        if (other := moves.get(mr.merge_commit)) is not None:
            report.add(
                "landing",
                "double_record",
                f"merge requests {other.id} and {mr.id} both record the move to "
                f"{mr.merge_commit[:12]}",
                ids={**rid, "merge_requests": [other.id, mr.id]},
                commits=[mr.merge_commit],
                needs_person="one of them did not land: check both rigs' work on the target",
            )
            continue
        if mr.rig_id and (other := sources.get(mr.source_commit)) is not None:
            report.add(
                "landing",
                "double_publish",
                f"commit {mr.source_commit[:12]} was published twice on {target}: by merge "
                f"requests {other.id} and {mr.id}",
                ids={**rid, "merge_requests": [other.id, mr.id]},
                commits=[other.merge_commit, mr.merge_commit],
                needs_person="revert one of the two merge commits on the target",
            )
        moves[mr.merge_commit] = mr
        if mr.rig_id:
            sources[mr.source_commit] = mr
        if repository.gate_command and (
            (mr.gate_exit_code is None and (mr.finished_at or mr.created_at) > gate_since)
            or (mr.gate_exit_code is not None and mr.gate_exit_code != 0)
        ):
            report.add(
                "gate",
                "ungated_landing",
                f"merge request {mr.id} moved {target} to {mr.merge_commit[:12]} with no passing "
                f"gate (exit {mr.gate_exit_code})",
                ids={**rid, "merge_request": mr.id},
                commits=[mr.merge_commit],
                needs_person="run the gate on the target now; revert the landing if it fails",
            )
    if not moves:
        return
    first = min(moves.values(), key=lambda m: (m.finished_at or m.created_at, m.id))
    for mr in publishing:
        if mr.merge_commit != mr.target_commit:
            moves.setdefault(mr.merge_commit, mr)
    line = g.first_parent_line(repository.path, tip, [first.target_commit])
    unexplained: list[str] = []
    i = 0
    while i < len(line):
        mr = moves.get(line[i])
        if mr is None:
            unexplained.append(line[i])
            i += 1
            continue
        i += 1
        while i < len(line) and line[i] != mr.target_commit:
            i += 1  # the commits a rebase landing replayed under its tip
    if unexplained:
        report.add(
            "landing",
            "unrecorded_publish",
            f"{target} moved through {len(unexplained)} commit(s) no landing records "
            f"(newest {unexplained[0][:12]}): published by hand, or by a worker that died "
            "before recording it",
            ids=rid,
            commits=unexplained[:20],
            needs_person="if a person pushed them, nothing is lost; otherwise find the merge "
            "request whose work they carry and record it",
        )


def _worktrees_check(
    report: AuditReport, g: _Git, repository: Repository, rigs: list[Rig], refs: dict[str, str]
) -> None:
    rid = {"repository": repository.name}
    root = Path(settings.GASTOWN_WORKTREE_ROOT).resolve() / repository.name
    listed = {
        w.path.resolve(): w
        for w in g.worktree_list(repository.path)
        if not w.path.name.startswith(git.TEMP_PREFIX)
    }
    claimed = set()
    for rig in rigs:
        path = Path(rig.worktree_path).resolve() if rig.worktree_path else None
        if path is None:
            continue
        if rig.state in (Rig.State.REQUESTED, Rig.State.PROVISIONING, Rig.State.FAILED):
            claimed.add(path)
            continue
        if rig.state not in Rig.LIVE_STATES:
            continue
        claimed.add(path)
        ids = {**rid, "rig": rig.slug}
        if f"refs/heads/{rig.branch}" not in refs:
            report.add(
                "worktree",
                "branch_missing",
                f"live rig {rig.slug}'s branch {rig.branch} is gone",
                ids=ids,
                commits=[rig.head_commit] if rig.head_commit else [],
                needs_person="tear the rig down (its recorded head is checked as lost work) or "
                "recreate the branch at its head",
            )
            continue
        wt = listed.get(path)
        if wt is None or not path.is_dir():
            report.add(
                "worktree",
                "worktree_missing",
                f"live rig {rig.slug}'s worktree {path} is not on disk",
                ids=ids,
            )
        elif wt.branch != rig.branch:
            report.add(
                "worktree",
                "worktree_wrong_branch",
                f"rig {rig.slug}'s worktree {path} is on {wt.branch or 'a detached HEAD'}, "
                f"not {rig.branch}",
                ids=ids,
                needs_person=f"check {rig.branch} out there again (git switch), keeping any work",
            )
    for path, wt in listed.items():
        if path.is_relative_to(root) and path not in claimed:
            report.add(
                "worktree",
                "orphan_worktree",
                f"worktree {path} (branch {wt.branch or 'detached'}) has no live rig",
                ids=rid,
                commits=[wt.head] if wt.head else [],
                needs_person="manage.py reconcile --repair removes it when clean and merged; "
                "otherwise save its work and remove it",
            )


# --- the database: landed convoys, holders, the event log --------------------------------------


def _convoys_check(report: AuditReport) -> dict[int, dict[str, dict[str, dict]]]:
    """Landed convoys whose legs did not land (reported here), and the commits of those that did
    (repository -> target -> sha -> ids, checked against the target with the rest)."""
    commits: dict[int, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    legs = (
        Leg.objects.filter(convoy__state=Convoy.State.LANDED)
        .exclude(state=Leg.State.CANCELLED)
        .select_related("convoy", "landed_merge_request")
    )
    for leg in legs:
        convoy = leg.convoy
        ids = {"convoy": convoy.slug, "leg": leg.key}
        mr = leg.landed_merge_request
        if leg.state != Leg.State.LANDED or mr is None or mr.state != MR.MERGED:
            report.add(
                "convoy",
                "leg_not_landed",
                f"convoy {convoy.slug} is landed but its leg {leg.key} is {leg.state}"
                + (f" (merge request {mr.id} {mr.state})" if mr else " with no merge request"),
                ids=ids,
                needs_person="reopen the convoy (launch it again) and land the leg",
            )
            continue
        if mr.merge_commit:
            commits[convoy.repository_id][convoy.target_branch][mr.merge_commit] = ids
    return commits


def _gate_changes() -> dict[int, Any]:
    """When each repository's gate command last changed (landings before had another gate)."""
    changed = {}
    for event in Event.objects.filter(kind="repository.updated").order_by("id"):
        if "gate_command" in (event.payload.get("fields") or []):
            changed[event.repository_id] = event.created_at
    return changed


def _holders_check(report: AuditReport, now) -> None:
    # beads: one live holder each
    beads = list(
        Bead.objects.filter(status=Bead.Status.IN_PROGRESS).only(
            "id", "short_id", "assignee_id", "rig_id", "claimed_by_run_id", "lease_expires_at"
        )
    )
    run_ids = {b.claimed_by_run_id for b in beads if b.claimed_by_run_id}
    runs = {
        r.id: r for r in AgentRun.objects.filter(id__in=run_ids).only("id", "agent_id", "state")
    }
    overdue = now - timedelta(seconds=LEASE_SWEEP_GRACE_SECONDS)
    for bead in beads:
        ids = {"bead": bead.short_id}
        if bead.claimed_by_run_id:
            run = runs.get(bead.claimed_by_run_id)
            if run is None or not run.is_active:
                report.add(
                    "holders",
                    "claim_held_by_ended_run",
                    f"bead {bead.short_id} is held by run {bead.claimed_by_run_id}, which "
                    f"{'is ' + run.state if run else 'does not exist'}",
                    ids={**ids, "run": bead.claimed_by_run_id},
                )
            elif run.agent_id != bead.assignee_id:
                report.add(
                    "holders",
                    "bead_two_holders",
                    f"bead {bead.short_id} is assigned to agent {bead.assignee_id} but held by "
                    f"run {run.id} of agent {run.agent_id}",
                    ids={**ids, "run": run.id, "agents": [bead.assignee_id, run.agent_id]},
                    needs_person="release the claim (gt release, or the board) and let the "
                    "agent doing the work claim it",
                )
        if bead.lease_expires_at and bead.lease_expires_at < overdue:
            report.add(
                "holders",
                "claim_lease_overdue",
                f"bead {bead.short_id}'s lease lapsed at {bead.lease_expires_at:%H:%M:%S} and the "
                "claim was not returned (is the scheduler running?)",
                ids=ids,
            )
    # rigs: one active run each (a constraint, unless someone dropped it)
    for row in (
        AgentRun.objects.filter(state__in=AgentRun.ACTIVE_STATES)
        .values("rig_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    ):
        report.add(
            "holders",
            "rig_two_runs",
            f"rig {row['rig_id']} has {row['n']} active runs",
            ids={"rig_id": row["rig_id"]},
            needs_person="stop all but one (the board's run page, or POST runs/{id}/stop/)",
        )
    # queues: one live lease each, its holder alive, nothing stranded or left waiting
    leases_now = list(MergeQueueLease.objects.all())
    active = list(
        # in the queue's hands (a request awaiting review waits for a person, not a worker)
        MergeRequest.objects.filter(state__in=(MR.QUEUED, MR.CHECKING, MR.TESTING)).only(
            "id",
            "repository_id",
            "target_branch",
            "state",
            "claimed_by",
            "created_at",
            "updated_at",
        )
    )
    with_work = {(mr.repository_id, mr.target_branch) for mr in active}
    live: dict[tuple[int, str], str] = {}
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for lease in leases_now:
        key = (lease.repository_id, lease.target_branch)
        counts[key] += 1
        if lease.expires_at >= now and not merge_queue.holder_dead(lease.holder):
            live[key] = lease.holder
        elif lease.expires_at >= now and key in with_work:  # (idle, it blocks nothing)
            report.add(
                "holders",
                "queue_lease_dead_holder",
                f"queue {lease.target_branch} is leased to {lease.holder}, a dead process, "
                "and has requests waiting",
                ids={
                    "repository_id": lease.repository_id,
                    "target": lease.target_branch,
                    "holder": lease.holder,
                },
            )
    for (repository_id, target), n in counts.items():
        if n > 1:
            report.add(
                "holders",
                "queue_two_leases",
                f"queue {target} has {n} leases",
                ids={"repository_id": repository_id, "target": target},
                needs_person="stop the merge workers, delete the leases, start them again",
            )
    waiting = now - timedelta(seconds=QUEUED_GRACE_SECONDS)
    suspects = []
    for mr in active:
        holder = live.get((mr.repository_id, mr.target_branch))
        if (mr.state != MR.QUEUED and holder != mr.claimed_by) or (
            mr.state == MR.QUEUED and holder is None and mr.updated_at < waiting
        ):
            suspects.append(mr)
    if suspects:  # read again: a worker may have taken or finished them since
        fresh = {m.id: m for m in MergeRequest.objects.filter(id__in=[m.id for m in suspects])}
        leased = {
            (lease.repository_id, lease.target_branch): lease
            for lease in MergeQueueLease.objects.filter(expires_at__gte=timezone.now())
        }
        for mr in suspects:
            now_mr = fresh.get(mr.id)
            if now_mr is None or now_mr.state != mr.state or now_mr.claimed_by != mr.claimed_by:
                continue
            lease = leased.get((mr.repository_id, mr.target_branch))
            holder = lease.holder if lease and not merge_queue.holder_dead(lease.holder) else None
            ids = {
                "merge_request": mr.id,
                "repository_id": mr.repository_id,
                "target": mr.target_branch,
            }
            if mr.state != MR.QUEUED and holder != mr.claimed_by:
                report.add(
                    "holders",
                    "merge_request_stranded",
                    f"merge request {mr.id} is {mr.state} for {mr.claimed_by or 'nobody'}, who "
                    "no longer holds the queue",
                    ids=ids,
                )
            elif mr.state == MR.QUEUED and holder is None:
                report.add(
                    "holders",
                    "merge_request_waiting",
                    f"merge request {mr.id} has been queued since {mr.updated_at:%H:%M:%S} and no "
                    "worker holds its queue (is the scheduler running?)",
                    ids=ids,
                )
    stranded = now - timedelta(seconds=PROVISION_GRACE_SECONDS)
    for rig in Rig.objects.filter(
        state__in=(Rig.State.REQUESTED, Rig.State.PROVISIONING), updated_at__lt=stranded
    ).only("id", "slug", "state", "updated_at", "repository_id"):
        report.add(
            "holders",
            "provision_stranded",
            f"rig {rig.slug} has been {rig.state} since {rig.updated_at:%H:%M:%S} (its task was "
            "lost?)",
            ids={"rig": rig.slug, "rig_id": rig.id},
        )


def _events_check(report: AuditReport, rigs: list[Rig]) -> None:
    last_rig = dict(
        Event.objects.filter(kind="rig.state", rig_id__isnull=False)
        .values("rig_id")
        .annotate(last=Max("id"))
        .values_list("rig_id", "last")
    )
    last_mr = {
        int(mr): last
        for mr, last in Event.objects.filter(kind="merge_request.state")
        .annotate(mr=KT("payload__merge_request"))
        .values("mr")
        .annotate(last=Max("id"))
        .values_list("mr", "last")
        if mr is not None and str(mr).isdigit()
    }
    payloads = dict(
        Event.objects.filter(id__in=[*last_rig.values(), *last_mr.values()]).values_list(
            "id", "payload"
        )
    )
    for rig in rigs:
        seen = payloads.get(last_rig.get(rig.id), {}).get("to")
        if seen != rig.state:
            report.add(
                "events",
                "state_without_event",
                f"rig {rig.slug} is {rig.state}, but its events end at {seen or 'nothing'}: a "
                "replaying client would not know",
                ids={"rig": rig.slug, "rig_id": rig.id, "last_seen": seen or ""},
            )
    for mr in MergeRequest.objects.only("id", "state"):
        seen = payloads.get(last_mr.get(mr.id), {}).get("to")
        if seen != mr.state:
            report.add(
                "events",
                "state_without_event",
                f"merge request {mr.id} is {mr.state}, but its events end at {seen or 'nothing'}",
                ids={"merge_request": mr.id, "last_seen": seen or ""},
            )
    if connection.vendor == "sqlite":  # ids are dense there: a hole is a deleted row
        stats = Event.objects.aggregate(n=Count("id"), low=Max("id"))
        low = Event.objects.order_by("id").values_list("id", flat=True).first()
        if stats["n"] and stats["low"] - low + 1 != stats["n"]:
            report.add(
                "events",
                "event_deleted",
                f"the event log has {stats['low'] - low + 1 - stats['n']} hole(s) between ids "
                f"{low} and {stats['low']}: rows were deleted",
                ids={},
                needs_person="restore the log from a backup; clients may have missed changes",
            )


# --- repairs -----------------------------------------------------------------------------------


def _repair(report: AuditReport) -> None:
    """Fix what needs no judgement; each repair is safe to repeat."""
    repositories = {r.name: r for r in Repository.objects.all()}
    recovered_queues: set[tuple[int, str]] = set()
    for v in report.violations:
        if v.needs_person:
            continue
        try:
            _repair_one(v, repositories, recovered_queues)
        except Exception:  # one failed repair must not stop the others; the re-audit says
            logger.exception("audit: repairing %s failed", v.code)


def _repair_one(v: Violation, repositories: dict, recovered_queues: set) -> None:
    ids = v.ids
    if v.code == "commit_unreachable":
        operations.commit_keep(repositories[ids["repository"]], ids["keep_as"], v.commits[0])
    elif v.code == "claim_held_by_ended_run":
        leases.bead_claims_end_for_run(
            run_id=ids["run"], reason="its run had ended (returned by the audit)"
        )
    elif v.code == "claim_lease_overdue":
        leases.bead_leases_expire()
    elif v.code == "queue_lease_dead_holder":
        repository = Repository.objects.get(pk=ids["repository_id"])
        merge_queue.lease_release(repository, ids["target"], ids["holder"])
        _enqueue(tasks.merge_queue_process, repository.id, ids["target"])
    elif v.code in ("merge_request_stranded", "merge_request_waiting"):
        key = (ids["repository_id"], ids["target"])
        if key not in recovered_queues:
            recovered_queues.add(key)
            merge_queue.queue_recover(*key)
            _enqueue(tasks.merge_queue_process, *key)
    elif v.code == "provision_stranded":
        _enqueue(tasks.rig_provision, ids["rig_id"])
    elif v.code == "worktree_missing":
        rig = Rig.objects.select_related("repository").get(
            repository__name=ids["repository"], slug=ids["rig"]
        )
        operations.rig_worktree_recreate(rig)
    elif v.code == "state_without_event":
        if "rig_id" in ids:
            rig = Rig.objects.get(pk=ids["rig_id"])
            audit_services.rig_state_event_restore(rig=rig, last_seen=ids["last_seen"])
        else:
            mr = MergeRequest.objects.get(pk=ids["merge_request"])
            audit_services.merge_request_state_event_restore(
                merge_request=mr, last_seen=ids["last_seen"]
            )


def _enqueue(task, *args) -> None:
    """Hand a lost task to the workers again (no retries: without a broker, say so and go on;
    the periodic safety nets enqueue it too)."""
    try:
        task.apply_async(args=args, retry=False)
    except Exception as exc:  # a broker that is down: the next kick will do it
        logger.warning("audit: could not enqueue %s%s: %s", task.name, args, exc)
