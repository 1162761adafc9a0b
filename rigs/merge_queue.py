"""The refinery: lands queued merge requests on their target branch, one queue per target.

- A lease row (MergeQueueLease) makes one worker the only publisher of a target at a time.
- Candidates are computed without a checkout (`merge-tree --write-tree` + `commit-tree`),
  gated in a throwaway worktree, and published with `update-ref <new> <old>` (compare-and-swap).
- Several queued requests are gated together (batch); a failing batch is bisected until the
  breaking request is isolated, and the others land.
- A worker killed mid-merge leaves requests in `checking`/`testing`; the next run re-queues them
  (or records them merged when their commits already reached the target: never twice).
"""

import itertools
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from common.clock import db_now
from common.faults import fault_point
from common.process import pid_alive, private_dir
from common.statemachine import StaleState
from rigs import commands, git, paths, services
from rigs.models import MergeQueueLease, MergeRequest, Repository

logger = logging.getLogger(__name__)

GATE_LOG_LINES = 200
S = MergeRequest.State


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


# --- the lease --------------------------------------------------------------------------------


def holder_dead(holder: str) -> bool:
    """Whether a lease holder (`host:pid:nonce`, see `worker_id`) is a process of this machine
    that is gone: a SIGKILLed worker's lease need not be waited out (it lasts minutes, a gate's
    time limit twice). Another machine's holder, or a pid that exists, is not known dead."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def lease_acquire(repository: Repository, target_branch: str, holder: str, ttl: float) -> bool:
    """Take (or renew) the queue's lease if it is free, expired, already ours, or held by a
    dead process of this machine (taken over by compare-and-swap on the dead holder's name)."""
    now = db_now()  # (a worker whose clock jumped must not see a live lease expired)
    expires = now + timedelta(seconds=ttl)
    lease = MergeQueueLease.objects.filter(repository=repository, target_branch=target_branch)
    free = Q(holder=holder) | Q(expires_at__lt=now)
    current = lease.exclude(free).values_list("holder", flat=True).first()
    if current is not None and holder_dead(current):
        logger.warning("merge queue %s: taking over the lease of dead %s", target_branch, current)
        free |= Q(holder=current)
    taken = lease.filter(free).update(holder=holder, expires_at=expires)
    if taken:
        return True
    try:
        with transaction.atomic():
            MergeQueueLease.objects.create(
                repository=repository,
                target_branch=target_branch,
                holder=holder,
                expires_at=expires,
            )
        return True
    except IntegrityError:
        return False


def lease_release(repository: Repository, target_branch: str, holder: str) -> None:
    """Give the lease up. After the database dropped our connection (a failed run's usual
    cause), once more on a new connection: a live worker's lease is never taken over, so left
    there it would stall the queue for its whole time to live (a gate's time limit twice)."""
    lease = MergeQueueLease.objects.filter(
        repository=repository, target_branch=target_branch, holder=holder
    )
    try:
        lease.delete()
    except (OperationalError, InterfaceError):
        if transaction.get_connection().in_atomic_block:
            raise
        logger.warning("merge queue %s: releasing the lease on a new connection", target_branch)
        transaction.get_connection().close()
        lease.delete()


# --- gates ------------------------------------------------------------------------------------


@dataclass
class GateResult:
    passed: bool
    exit_code: int | None
    log_tail: str
    seconds: float


def gate_run(repository: Repository, commit: str) -> GateResult:
    """Run the repository's gate command against `commit` in a throwaway detached worktree.

    The gate is admin configuration (like CI), so it runs through /bin/sh, but on code an agent
    wrote: sandboxed, with an allow-listed environment (rigs.commands); its process group is
    killed at the time limit. The worktree is always removed (also after a crash: the next
    run's cleanup removes leftovers whose owner is dead)."""
    started = time.monotonic()
    if not repository.gate_command:
        return GateResult(True, 0, "", 0.0)
    scratch_dir = private_dir(paths.gate_scratch_dir(repository.name))
    with git.temporary_worktree(repository.path, commit, scratch_dir) as scratch:
        fault_point("gate.running")
        result = commands.checkout_command_run(
            repository.gate_command,
            checkout=scratch,
            variables={"GASTOWN_CANDIDATE": commit},
            timeout=repository.gate_timeout_seconds,
        )
    output = result.output
    if result.timed_out:
        output += f"\n[gastown] gate timed out after {repository.gate_timeout_seconds}s"
    tail = "\n".join(output.splitlines()[-GATE_LOG_LINES:])
    # (the output is scrubbed of the server's secrets by checkout_command_run)
    return GateResult(result.exit_code == 0, result.exit_code, tail, time.monotonic() - started)


# --- candidates -------------------------------------------------------------------------------


@dataclass
class Step:
    """One merge request applied on top of the candidate so far."""

    merge_request: MergeRequest
    source: str
    before: str
    after: str


@dataclass
class Candidate:
    base: str
    tip: str
    steps: list[Step] = field(default_factory=list)


def _merge_message(repository: Repository, mr: MergeRequest) -> str:
    who = f" (rig {mr.rig.slug})" if mr.rig_id else ""
    return (
        f"Merge {mr.source_branch} into {mr.target_branch}{who}\n\n"
        f"Gas Town merge request {mr.id}, strategy {repository.merge_strategy}."
    )


def candidate_apply(
    repository: Repository, tip: str, mr: MergeRequest, source: str
) -> tuple[str | None, list[str]]:
    """Apply one request on `tip` with the repository's strategy: (new tip, conflicts)."""
    repo = repository.path
    strategy = repository.merge_strategy
    if strategy == Repository.MergeStrategy.REBASE:
        base = git.merge_base(repo, tip, source) or tip
        commits = git.rev_list(repo, base, source, no_merges=True)
        result = git.replay_commits(repo, tip, commits, paths.gate_scratch_dir(repository.name))
        return result.tip, result.conflicts
    merged = git.merge_tree(repo, tip, source)
    if not merged.clean:
        return None, merged.conflicts
    return candidate_commit(repository, tip, mr, source, merged.tree), []


def candidate_commit(
    repository: Repository, tip: str, mr: MergeRequest, source: str, tree: str
) -> str:
    """The merge commit (one parent for `squash`) holding `tree`."""
    parents = (
        [tip, source] if repository.merge_strategy == Repository.MergeStrategy.MERGE else [tip]
    )
    return git.commit_tree(repository.path, tree, parents, _merge_message(repository, mr))


# --- the run ----------------------------------------------------------------------------------


class QueueRun:
    """One worker's pass over one queue while it holds the lease."""

    def __init__(self, repository: Repository, target_branch: str, holder: str) -> None:
        self.repository = repository
        self.target_branch = target_branch
        self.holder = holder
        self.ref = f"refs/heads/{target_branch}"
        self.ttl = max(300.0, repository.gate_timeout_seconds * 2 + 60.0)
        # (tip, source) -> (new tip, conflicts). Bisecting rebuilds the same merges on the same
        # tips; reusing them saves the git work and keeps candidate commits identical.
        self.applied: dict[tuple[str, str], tuple[str | None, list[str]]] = {}
        self.trees: dict[str, str] = {}  # commit -> tree, for commits seen in this run

    def renew(self) -> None:
        if not lease_acquire(self.repository, self.target_branch, self.holder, self.ttl):
            raise RuntimeError("merge queue lease lost")

    def queue(self):
        return MergeRequest.objects.filter(
            repository=self.repository, target_branch=self.target_branch
        ).select_related("rig", "repository")

    def target_tip(self) -> str:
        repo = self.repository.path
        tip = git.resolve_branch(repo, self.target_branch)
        if tip is None:
            # A convoy's integration branch is made from the repository's target on first use.
            start = git.resolve_branch(repo, self.repository.target_branch)
            if start is None:
                raise git.GitError(f"target branch {self.target_branch} does not exist")
            git.update_ref(repo, self.ref, start, git.ZERO_OID)
            tip = start
        return tip

    def refresh_awaiting(self) -> None:
        """Requests waiting for a review show the branch's tip now (what a reviewer approves):
        a worker reads it, so the diff page never reads a stale commit."""
        waiting = list(self.queue().filter(state=S.AWAITING_REVIEW))
        if not waiting:
            return
        tips = git.branch_tips(self.repository.path, {mr.source_branch for mr in waiting})
        for mr in waiting:
            tip = tips.get(mr.source_branch)
            if tip and tip != mr.source_commit:
                MergeRequest.objects.filter(pk=mr.pk, state=S.AWAITING_REVIEW).update(
                    source_commit=tip, updated_at=timezone.now()
                )

    def recover(self) -> None:
        """Requests a dead worker left in checking/testing: a candidate it published (its
        recorded `merge_commit` is on the target) is recorded as the landing it was; the rest
        go back to the queue, their unpublished commits forgotten."""
        stranded = list(self.queue().filter(state__in=[S.CHECKING, S.TESTING]))
        self.published_record([mr for mr in stranded if mr.merge_commit and mr.target_commit])
        for mr in stranded:
            if mr.state == S.MERGED:
                continue
            try:
                services.merge_request_transition(
                    merge_request=mr,
                    to=S.QUEUED,
                    reason="recovered after an interrupted run",
                    claimed_by="",
                    claim_expires_at=None,
                    batch_id=None,
                    merge_commit="",
                    gate_exit_code=None,
                    gate_log_tail="",
                    gate_seconds=None,
                )
            except StaleState:
                continue

    def published_record(self, intents: list[MergeRequest]) -> None:
        """Finish the landings a dead worker published but did not record: per batch, the
        steps whose merge commit the target reaches, chained base to tip as they were built."""
        if not intents:
            return
        repo = self.repository.path
        tip = git.resolve_branch(repo, self.target_branch)
        if tip is None:
            return
        missing = git.commits_missing(repo, [mr.merge_commit for mr in intents])
        present = [mr for mr in intents if mr.merge_commit not in missing]
        off_target = git.commits_unreachable(repo, [mr.merge_commit for mr in present], [tip])
        batches: dict = {}
        for mr in present:
            if mr.merge_commit not in off_target:
                batches.setdefault(mr.batch_id, []).append(mr)
        for mrs in batches.values():
            mrs.sort(key=lambda mr: (mr.priority, mr.created_at, mr.id))  # the order of `claim`
            chained = all(a.merge_commit == b.target_commit for a, b in itertools.pairwise(mrs))
            if not chained:
                continue  # not one candidate as built: back to the queue (nothing lands twice)
            candidate = Candidate(base=mrs[0].target_commit, tip=mrs[-1].merge_commit)
            candidate.steps = [
                Step(mr, mr.source_commit, mr.target_commit, mr.merge_commit) for mr in mrs
            ]
            first = mrs[0]
            gate = None
            if first.gate_exit_code is not None:
                gate = GateResult(
                    True, first.gate_exit_code, first.gate_log_tail, first.gate_seconds or 0.0
                )
            logger.warning(
                "merge queue %s: recording %d request(s) a dead worker published at %s",
                self.target_branch,
                len(mrs),
                candidate.tip[:12],
            )
            self.record(candidate, gate)

    @transaction.atomic
    def claim(self, limit: int) -> list[MergeRequest]:
        """Claim the next batch in one transaction (its events go out as one broadcast)."""
        batch_id = uuid.uuid4()
        claimed = []
        expires = timezone.now() + timedelta(seconds=self.ttl)
        for mr in (
            self.queue().filter(state=S.QUEUED).order_by("priority", "created_at", "id")[:limit]
        ):
            try:
                services.merge_request_transition(
                    merge_request=mr,
                    to=S.CHECKING,
                    claimed_by=self.holder,
                    claim_expires_at=expires,
                    batch_id=batch_id,
                    started_at=timezone.now(),
                    attempts=mr.attempts + 1,
                )
                claimed.append(mr)
            except StaleState:
                continue
        return claimed

    def build(self, base: str, mrs: list[MergeRequest]) -> tuple[Candidate, list[MergeRequest]]:
        """Merge `mrs` in order on `base`. Conflicting requests are finished as conflicted and
        left out; requests whose commits are already on the target land as they are."""
        repo = self.repository.path
        candidate = Candidate(base=base, tip=base)
        for mr in mrs:
            source = git.resolve_branch(repo, mr.source_branch)
            if source is None:
                services.merge_request_finish(
                    merge_request=mr,
                    to=S.FAILED,
                    reason=f"branch {mr.source_branch} no longer exists",
                )
                continue
            if source != mr.source_commit:
                MergeRequest.objects.filter(pk=mr.pk).update(source_commit=source)
                mr.source_commit = source
            if mr.reviews_required and services.approvals_of(mr, source) < mr.reviews_required:
                # new commits since the approval: a person approves the new tip first
                services.merge_request_transition(
                    merge_request=mr,
                    to=S.AWAITING_REVIEW,
                    reason=f"new commits since the approval ({source[:10]}): it needs "
                    f"{mr.reviews_required} approval(s) of that commit",
                    claimed_by="",
                    claim_expires_at=None,
                    batch_id=None,
                )
                continue
            key = (candidate.tip, source)
            if key not in self.applied:
                self.applied[key] = self.apply(candidate.tip, mr, source)
            new_tip, conflicts = self.applied[key]
            if new_tip is None:
                services.merge_request_finish(
                    merge_request=mr,
                    to=S.CONFLICTED,
                    conflicts=conflicts,
                    target_commit=base,
                    reason=f"conflicts with {self.target_branch} at {base[:10]} in "
                    + ", ".join(conflicts[:10]),
                )
                continue
            # new_tip == tip: its work is already on the target (e.g. published by a worker
            # that died before recording it); it lands as it is, nothing is merged twice.
            candidate.steps.append(Step(mr, source, candidate.tip, new_tip))
            candidate.tip = new_tip
        return candidate, [s.merge_request for s in candidate.steps]

    def apply(self, tip: str, mr: MergeRequest, source: str) -> tuple[str | None, list[str]]:
        """`candidate_apply`, except that a request bringing nothing new leaves `tip` as is."""
        repo = self.repository.path
        if self.repository.merge_strategy == Repository.MergeStrategy.REBASE:
            if git.is_ancestor(repo, source, tip):
                return tip, []
            return candidate_apply(self.repository, tip, mr, source)
        merged = git.merge_tree(repo, tip, source)
        if not merged.clean:
            return None, merged.conflicts
        if tip not in self.trees:
            self.trees[tip] = git.tree_of(repo, tip)
        if merged.tree == self.trees[tip]:
            return tip, []
        new_tip = candidate_commit(self.repository, tip, mr, source, merged.tree)
        self.trees[new_tip] = merged.tree
        return new_tip, []

    def gate(self, candidate: Candidate) -> GateResult:
        if self.repository.gate_command:
            for step in candidate.steps:
                if step.merge_request.state == S.CHECKING:
                    services.merge_request_transition(
                        merge_request=step.merge_request, to=S.TESTING
                    )
        self.renew()
        return gate_run(self.repository, candidate.tip)

    def publish(self, candidate: Candidate, gate: GateResult | None) -> None:
        """Compare-and-swap the target from the candidate's base to its tip, then record.

        What is about to be published is written first (each request's `merge_commit` and
        `target_commit`, and the gate's result, while it is still checking or testing): a
        worker killed between `update-ref` and the record leaves the truth in the database,
        and `recover` finishes that landing as it was, instead of recording an empty one."""
        repo = self.repository.path
        services.merge_requests_publishing(
            commits={
                step.merge_request.id: {
                    "merge_commit": step.after,
                    "target_commit": step.before,
                    **self._gate_fields(gate),
                }
                for step in candidate.steps
            }
        )
        fault_point("merge.before_update_ref")
        if candidate.tip != candidate.base:
            git.update_ref(repo, self.ref, candidate.tip, candidate.base)
        fault_point("merge.after_update_ref")
        self.record(candidate, gate)

    @staticmethod
    def _gate_fields(gate: GateResult | None) -> dict:
        return {
            "gate_exit_code": gate.exit_code if gate else None,
            "gate_log_tail": gate.log_tail if gate else "",
            "gate_seconds": gate.seconds if gate else None,
        }

    def record(self, candidate: Candidate, gate: GateResult | None) -> None:
        """Record a published candidate: its requests merged, with their commits and paths."""
        repo = self.repository.path
        # The candidate's changed paths are the union of its steps' (one diff per step).
        changed: set[str] = set()
        commits = {}
        for step in candidate.steps:
            paths = (
                []
                if step.after == step.before
                else git.changed_paths(repo, step.before, step.after)
            )
            changed.update(paths)
            commits[step.merge_request.id] = {
                "merge_commit": step.after,
                "target_commit": step.before,
                "changed_paths": paths,
                **self._gate_fields(gate),
                "claimed_by": "",
                "claim_expires_at": None,
            }
        services.merge_requests_landed(
            merge_requests=[s.merge_request for s in candidate.steps],
            repository=self.repository,
            target_branch=self.target_branch,
            old_tip=candidate.base,
            new_tip=candidate.tip,
            changed_paths=sorted(changed),
            commits=commits,
        )

    def fail(self, mr: MergeRequest, gate: GateResult, base: str, tip: str) -> None:
        services.merge_request_finish(
            merge_request=mr,
            to=S.FAILED,
            reason=f"gate failed (exit {gate.exit_code})",
            gate_exit_code=gate.exit_code,
            gate_log_tail=gate.log_tail,
            gate_seconds=gate.seconds,
            target_commit=base,
            merge_commit=tip,
        )

    def land(
        self, base: str, mrs: list[MergeRequest], failed_gate: GateResult | None = None
    ) -> tuple[str, bool]:
        """Land what can land of `mrs` on `base`: (new target tip, whether all of them landed).

        A group whose gate fails is split in two and each half tried on the tip the previous
        half left (bisect). When the left half of a failing group lands whole, the right half
        must hold the breaking request (`failed_gate` carries that failure down), so it is
        split without gating it whole again, and a lone suspect fails with that gate's log."""
        candidate, included = self.build(base, mrs)
        if not included:
            return base, not mrs
        if failed_gate is not None and len(included) == 1:
            self.fail(included[0], failed_gate, base, candidate.tip)
            return base, False
        gate = failed_gate
        if gate is None:
            gate = self.gate(candidate) if candidate.tip != base else None
            if gate is None or gate.passed:
                self.publish(candidate, gate)
                return candidate.tip, len(included) == len(mrs)
            if len(included) == 1:
                self.fail(included[0], gate, base, candidate.tip)
                return base, False
        for mr in included:  # back to checking while the halves are rebuilt
            if mr.state == S.TESTING:
                services.merge_request_transition(merge_request=mr, to=S.CHECKING)
        half = len(included) // 2
        tip, left_whole = self.land(base, included[:half])
        tip, _ = self.land(tip, included[half:], failed_gate=gate if left_whole else None)
        return tip, False

    def run(self) -> int:
        """Process until the queue is empty. Returns how many requests landed."""
        landed_before = self.queue().filter(state=S.MERGED).count()
        git.cleanup_temporary_worktrees(
            self.repository.path, paths.gate_scratch_dir(self.repository.name)
        )
        self.recover()
        self.refresh_awaiting()
        while True:
            self.renew()
            batch = self.claim(max(1, self.repository.batch_size))
            if not batch:
                break
            base = self.target_tip()
            try:
                self.land(base, batch)
            except git.RefMoved:
                # Someone else moved the target between check and publish: nothing was
                # overwritten; the unfinished requests go back to the queue and are recomputed.
                logger.info("target %s moved during a merge; recomputing", self.target_branch)
                self.recover()
        return self.queue().filter(state=S.MERGED).count() - landed_before


def merge_queue_process(repository_id: int, target_branch: str) -> int:
    """Run the queue if no other worker does. Re-checks after releasing the lease so a request
    queued while we were finishing is never stranded."""
    repository = Repository.objects.get(pk=repository_id)
    holder = worker_id()
    landed = 0
    while True:
        run = QueueRun(repository, target_branch, holder)
        if not lease_acquire(repository, target_branch, holder, run.ttl):
            return landed
        try:
            landed += run.run()
        finally:
            lease_release(repository, target_branch, holder)
        if not run.queue().filter(state=S.QUEUED).exists():
            return landed


def queue_recover(repository_id: int, target_branch: str, holder: str = "") -> bool:
    """Take a queue's lease long enough to recover what a dead worker left in it (a published
    candidate recorded, the rest back to `queued`), without landing anything: the audit's repair.
    False when a live worker holds the lease (it recovers by itself)."""
    repository = Repository.objects.get(pk=repository_id)
    holder = holder or worker_id()
    run = QueueRun(repository, target_branch, holder)
    if not lease_acquire(repository, target_branch, holder, run.ttl):
        return False
    try:
        run.recover()
    finally:
        lease_release(repository, target_branch, holder)
    return True


def merge_queues_with_work() -> list[tuple[int, str]]:
    return list(
        MergeRequest.objects.filter(state__in=MergeRequest.ACTIVE_STATES)
        .values_list("repository_id", "target_branch")
        .distinct()
    )
