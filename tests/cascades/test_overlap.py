"""The overlap radar at the level of lines, on real repositories: two live rigs that change the
same file are told whether their tips will conflict and where, or that they change different
places; one notice per pair and rig, updated in place, resolved on both sides when the overlap
is gone; finished rigs are never told; the radar runs in a worker after the sync commits."""

import time
from pathlib import Path

import pytest
from django.db import transaction

from cascades import overlap, tasks, topics
from notifications.models import Notification
from rigs import git, landing, operations
from rigs.models import Rig
from tests.cascades.test_cascades import app_repo, edit, land, rig  # noqa: F401
from tests.rigs.helpers import commit_file, register, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
K = Notification.Kind
DASH = "\u2013"
TOKENS = "auth/tokens.py"
BASE_LINES = [f"line {n}" for n in range(1, 41)]


def text(changes: dict[int, str] | None = None) -> str:
    """The 40-line base file with some lines (1-based) replaced."""
    changes = changes or {}
    return "".join(f"{changes.get(n, line)}\n" for n, line in enumerate(BASE_LINES, start=1))


@pytest.fixture
def repository(app_repo):  # noqa: F811
    commit_file(app_repo, TOKENS, text(), "a long tokens module")
    return register(app_repo)


def overlaps(r: Rig, state: str = "open") -> list[Notification]:
    return list(Notification.objects.filter(rig=r, kind=K.OVERLAP, state=state).order_by("id"))


def radar(r: Rig) -> list[Notification]:
    """What the task enqueued by `r`'s sync does (run here, without a worker)."""
    return overlap.cascade_overlap(rig_id=r.id)


def test_the_same_lines_are_a_warning_for_both_with_both_hunks(repository):
    a = edit(rig(repository, "a"), TOKENS, text({10: "a10", 11: "a11", 12: "a12"}))
    b = edit(rig(repository, "b"), TOKENS, text({11: "b11", 14: "b14"}))
    radar(b)
    [mine] = overlaps(a)
    [theirs] = overlaps(b)
    for notice, other in ((mine, b), (theirs, a)):
        assert notice.severity == "warning" and notice.topic == topics.overlap(other.id)
        assert (
            notice.summary
            == f"Overlap with {other.slug}: will conflict in {TOKENS} lines 10{DASH}12"
        )
        assert notice.action == (
            f"Coordinate with {other.slug} now: you both change lines 10{DASH}12 of {TOKENS}; "
            "agree who changes them (gt inbox --json shows both hunks)."
        )
        assert notice.source_rig_id == other.id
        [conflict] = notice.changes["conflicts"]
        assert conflict["path"] == TOKENS and conflict["lines"] == [[10, 12]]
    # each side's own hunk is "mine", the partner's "theirs"; b's line 14 is not in the clash
    assert "+a10" in mine.changes["conflicts"][0]["mine"]
    assert "+b11" in mine.changes["conflicts"][0]["theirs"]
    assert "b14" not in mine.changes["conflicts"][0]["theirs"]
    assert theirs.changes["conflicts"][0]["mine"] == mine.changes["conflicts"][0]["theirs"]
    assert mine.changes["same_files"] == [TOKENS] and mine.changes["verdict"] == "conflict"
    assert mine.cascade == theirs.cascade  # one pair, one cascade


def test_adjacent_lines_conflict_and_one_line_apart_does_not(repository):
    """git's rule: changes that touch conflict; the forecast follows `merge-tree`."""
    a = edit(rig(repository, "a"), TOKENS, text({5: "a5"}))
    b = edit(rig(repository, "b"), TOKENS, text({6: "b6"}))
    c = edit(rig(repository, "c"), TOKENS, text({7: "c7"}))
    forecasts = landing.overlap_forecasts(rig=a, partners=[(b, [TOKENS]), (c, [TOKENS])])
    assert forecasts[b.id].conflicts == [TOKENS]
    assert forecasts[b.id].files[0].together == [(5, 6)]
    assert forecasts[c.id].conflicts == [] and forecasts[c.id].files[0].together == []
    assert forecasts[c.id].files[0].mine == [(5, 5)] and forecasts[c.id].files[0].theirs == [(7, 7)]


def test_the_same_file_in_different_places_is_information(repository):
    a = edit(rig(repository, "a"), TOKENS, text({3: "a3"}))
    b = edit(rig(repository, "b"), TOKENS, text({30: "b30", 31: "b31"}))
    # git agrees: the two tips merge cleanly
    assert git.merge_tree(repository.path, a.head_commit, b.head_commit).clean
    radar(a)
    [mine], [theirs] = overlaps(a), overlaps(b)
    for notice, other in ((mine, b), (theirs, a)):
        assert notice.severity == "info"
        assert notice.summary == f"Overlap with {other.slug}: same file, different places: {TOKENS}"
        assert notice.action.startswith("Nothing to do now; ")
        assert notice.changes["verdict"] == "same_file" and not notice.changes.get("conflicts")
    assert mine.changes["places"] == [{"path": TOKENS, "mine": [[3, 3]], "theirs": [[30, 31]]}]
    assert theirs.changes["places"][0]["mine"] == [[30, 31]]


def test_repeated_syncs_update_one_notice_per_pair_and_rig(repository):
    a = edit(rig(repository, "a"), TOKENS, text({10: "a10"}))
    b = edit(rig(repository, "b"), TOKENS, text({10: "b10"}))
    radar(b)
    first = {n.rig_id: n.id for n in Notification.objects.filter(kind=K.OVERLAP)}
    radar(b)  # the same state again: nothing changes
    assert all(not n.revisions for n in Notification.objects.filter(kind=K.OVERLAP))
    for n, (r, change) in enumerate(
        [(a, {10: "a10", 11: "a11"}), (b, {10: "b10", 12: "b12"}), (a, {10: "a10", 13: "a13"})]
    ):
        r = edit(r, TOKENS, text(change), f"{r.slug}: round {n}")
        radar(r)
    notices = list(Notification.objects.filter(kind=K.OVERLAP).order_by("id"))
    assert {n.rig_id: n.id for n in notices} == first  # no new rows
    assert all(n.state == "open" for n in notices)
    for notice in notices:
        assert len(notice.revisions) == 3, [r["summary"] for r in notice.revisions]
        assert notice.occurrences == 4
    # the last state: a changes 10 and 13, b changes 10 and 12 (two places, 10 and 12-13)
    mine = Notification.objects.get(rig=a, kind=K.OVERLAP)
    assert mine.changes["conflicts"][0]["lines"] == [[10, 10], [12, 13]]
    assert f"lines 10, 12{DASH}13 of {TOKENS}" in mine.action


def test_an_overlap_that_goes_away_is_resolved_for_both(repository):
    a = edit(rig(repository, "a"), TOKENS, text({10: "a10"}))
    b = edit(rig(repository, "b"), TOKENS, text({10: "b10"}))
    edit(b, "auth/other.py", "OTHER = 1\n")  # b keeps other work
    radar(b)
    assert len(overlaps(a)) == len(overlaps(b)) == 1
    b = edit(b, TOKENS, text(), "b: revert tokens")  # b gives the file back
    assert TOKENS not in {f["path"] for f in b.changed_files}
    radar(b)
    assert overlaps(a) == overlaps(b) == []
    for r, other in ((a, b), (b, a)):
        [gone] = overlaps(r, "resolved")
        assert gone.resolution.startswith(f"the overlap with {other.slug} is gone")
    # and it comes back as a new notice when b edits the lines again
    b = edit(b, TOKENS, text({10: "b10 again"}))
    radar(a)  # either side's task re-evaluates the pair
    assert [n.severity for n in overlaps(a) + overlaps(b)] == ["warning", "warning"]


def test_a_pair_that_no_longer_conflicts_is_told_so_in_place(repository):
    a = edit(rig(repository, "a"), TOKENS, text({10: "a10"}))
    b = edit(rig(repository, "b"), TOKENS, text({10: "b10"}))
    radar(a)
    [warning] = overlaps(b)
    assert warning.severity == "warning"
    edit(b, TOKENS, text({20: "b20"}), "b: moves its change away")
    radar(b)
    [info] = overlaps(b)
    assert info.id == warning.id and info.severity == "info"
    assert info.revisions[-1]["severity"] == "warning"


def test_a_merged_or_finished_rig_is_never_told(repository):
    done = edit(rig(repository, "done"), TOKENS, text({10: "done10"}))
    land(done)
    done.refresh_from_db()
    assert done.state == Rig.State.MERGED  # no leg: its work is finished
    a = edit(rig(repository, "a"), TOKENS, text({10: "a10"}))
    failed = edit(rig(repository, "failed"), TOKENS, text({10: "f10"}))
    Rig.objects.filter(pk=failed.pk).update(state=Rig.State.FAILED)
    live = edit(rig(repository, "live"), TOKENS, text({10: "live10"}))
    radar(a)
    assert not Notification.objects.filter(rig__in=[done, failed], kind=K.OVERLAP).exists()
    assert {n.changes["rig"] for n in overlaps(a)} == {"live"}
    assert [n.changes["rig"] for n in overlaps(live)] == ["a"]
    # a finished rig's own sync tells nobody and closes what was open about it
    Rig.objects.filter(pk=live.pk).update(state=Rig.State.FAILED)
    assert radar(live) == []
    assert overlaps(a) == [] and overlaps(live) == []
    assert overlaps(a, "resolved")[0].resolution == "live has no work left to do (failed)"


def test_pairs_over_the_limit_keep_what_they_were_told(repository, monkeypatch):
    a = edit(rig(repository, "a"), TOKENS, text({10: "a10"}))
    edit(rig(repository, "b"), TOKENS, text({10: "b10"}))
    c = edit(rig(repository, "c"), TOKENS, text({10: "c10"}))
    radar(c)  # c's pairs, a and b, are both compared
    [with_c] = [n for n in overlaps(a) if n.changes["rig"] == "c"]
    monkeypatch.setattr(overlap, "MAX_PAIRS", 1)
    d = edit(rig(repository, "d"), TOKENS, text({10: "d10"}))
    radar(a)  # a's pairs b, c and d share one file each: only b (the first) is compared
    told = {n.changes["rig"]: n for n in overlaps(a)}
    assert told["b"].severity == "warning"
    assert told["c"].id == with_c.id and told["c"].revisions == [] and told["c"].state == "open"
    assert told["d"].severity == "info" and "lines not compared yet" in told["d"].summary
    assert [n.changes["verdict"] for n in overlaps(d)] == ["unchecked"]


def test_the_sync_enqueues_the_radar_after_its_commit(repository, monkeypatch):
    a = rig(repository, "a")
    b = edit(rig(repository, "b"), TOKENS, text({10: "b10"}))
    calls = []

    def delay(rig_id):
        calls.append((rig_id, transaction.get_connection().in_atomic_block))

    monkeypatch.setattr("cascades.tasks.cascade_overlap.delay", delay)
    with transaction.atomic():
        commit_file(Path(a.worktree_path), TOKENS, text({10: "a10"}))
        operations.rig_sync_run(a.id)
        assert calls == []  # not inside the transaction that recorded the sync
        assert not overlaps(b)  # and no git was read in it
    assert calls == [(a.id, False)]
    assert tasks.cascade_overlap(a.id) == 2  # the task: both sides told
    assert len(overlaps(b)) == 1


def test_the_radar_runs_in_the_worker_after_a_sync(repository, celery_worker):
    a = edit(rig(repository, "a"), TOKENS, text({10: "a10"}))
    b = edit(rig(repository, "b"), TOKENS, text({10: "b10"}))
    wait_for(
        lambda: len(overlaps(a)) == len(overlaps(b)) == 1,
        timeout=60,
        message="overlap notices from the worker",
    )
    assert overlaps(a)[0].changes["conflicts"][0]["lines"] == [[10, 10]]
    assert overlaps(b)[0].changes["rig"] == "a"


def test_one_radar_run_over_twenty_rigs_on_one_file(repository, capsys):
    """Twenty live rigs all change one file: two by two on the same line (ten conflicting
    pairs), the pairs apart. One run evaluates the nineteen pairs of one rig."""
    rigs = [
        edit(rig(repository, f"r{n:02d}"), TOKENS, text({(n // 2) * 3 + 1: f"r{n}"}))
        for n in range(20)
    ]
    started = time.perf_counter()
    sent = radar(rigs[0])
    first = time.perf_counter() - started
    started = time.perf_counter()
    radar(rigs[0])  # the same state: nothing written
    again = time.perf_counter() - started
    assert len(sent) == 38  # both sides of nineteen pairs
    assert [n.severity for n in overlaps(rigs[0])].count("warning") == 1  # only r01 clashes
    assert overlaps(rigs[1])[0].severity == "warning"
    with capsys.disabled():
        print(f"\noverlap radar, 20 rigs on one file: first run {first:.3f}s, again {again:.3f}s")
    assert first < 30


def test_hunks_of_odd_paths_new_deleted_and_binary_files(git_repo):
    """`diff_hunks` reads every path it is given (spaces, tabs, quotes, non-ASCII, a leading
    dash) and says which files are new, deleted or binary."""
    base = git.rev_parse(git_repo, "HEAD")
    odd = ["with space.txt", "tab\there.txt", 'quote".txt', "é.txt", "-dash.txt"]
    for name in odd:
        (git_repo / name).write_text("one\n")
    (git_repo / "logo.bin").write_bytes(b"\0\1\2")
    commit_file(git_repo, TOKENS, "def make_token(user):\n    return 2\n", "odd files")
    (git_repo / "docs" / "index.md").unlink()
    head = commit_file(git_repo, "README.md", "# app\n", "delete docs")
    paths = [*odd, "logo.bin", TOKENS, "docs/index.md", "README.md", "missing.txt"]
    hunks = git.diff_hunks(git_repo, base, head, paths)
    assert set(hunks) == {*odd, "logo.bin", TOKENS, "docs/index.md"}  # README.md is unchanged
    for name in odd:
        assert hunks[name].created and hunks[name].hunks[0].span == (0, 0)
    assert hunks["logo.bin"].binary and not hunks["logo.bin"].hunks
    assert hunks["docs/index.md"].deleted and hunks["docs/index.md"].hunks[0].span == (0, 1)
    [change] = hunks[TOKENS].hunks
    assert (change.old_start, change.old_count, change.span) == (2, 1, (1, 2))
    header, *lines = change.text.splitlines()
    assert header.startswith("@@ -2 +2 @@")  # then git's function context
    assert lines == ["-    return f'v1:{user}'", "+    return 2"]
