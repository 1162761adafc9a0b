"""The diff view (issue 21): a rig's change, a merge request's, a landed leg's; the tree with
+/- counts, renames, binaries and large files summarised, one file on demand (unified and side
by side, highlighted by Pygments, unchanged runs folded); review comments on lines placed on
later revisions or marked outdated; bounded queries. Real repositories in tmp_path."""

import re
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from convoys.models import Leg, ReviewComment
from convoys.services import reviews
from notifications.models import Notification
from rigs import diffs
from rigs import git as g
from rigs.models import MergeRequest, Rig
from tests import factories
from tests.conftest import git as run_git
from tests.rigs.helpers import commit_file

pytestmark = pytest.mark.django_db

PY = '"""A module."""\n\n\ndef greet(name):\n    return "hello " + name\n' + "".join(
    f"\n\ndef f{i}():\n    return {i}\n" for i in range(20)
)


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def make_change(tmp_path: Path):
    """`app` on main with three files; rig `api` changes one, renames one, adds a binary."""
    path = tmp_path / "app"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    (path / "docs").mkdir()
    (path / "docs" / "old.md").write_text("".join(f"line {i}\n" for i in range(1, 40)))
    commit_file(path, "app.py", PY, "initial")
    repository = factories.repository(name="app", path=str(path))
    worktree = tmp_path / "worktrees" / "api"
    run_git(path, "worktree", "add", "-q", "-b", "rig/api", str(worktree), "main")
    rig = factories.rig(
        repository=repository,
        slug="api",
        state=Rig.State.WORKING,
        branch="rig/api",
        worktree_path=str(worktree),
    )
    run_git(worktree, "mv", "docs/old.md", "docs/new.md")
    (worktree / "logo.png").write_bytes(b"\x89PNG\x00\x01\x02")
    head = commit_file(
        worktree, "app.py", PY.replace('"hello " + name', 'f"hello {name}!"'), "greet"
    )
    return repository, rig, worktree, head


def test_the_tree_lists_files_with_counts_renames_and_binaries(tmp_path):
    _, rig, _, head = make_change(tmp_path)
    target = diffs.rig_diff_target(rig)
    assert target.head == head and target.kind == "rig"
    files = {f.path: f for f in diffs.diff_tree(target).files}
    assert set(files) == {"app.py", "docs/new.md", "logo.png"}
    assert (files["app.py"].added, files["app.py"].deleted) == (1, 1)
    assert files["docs/new.md"].status == "R" and files["docs/new.md"].old_path == "docs/old.md"
    assert files["logo.png"].binary


def test_one_file_is_highlighted_folded_and_split(tmp_path):
    _, rig, _, _ = make_change(tmp_path)
    target = diffs.rig_diff_target(rig)
    view = diffs.diff_file_view(target, "app.py")
    rows = view.rows
    added = [r for r in rows if r.kind == "+"]
    assert len(added) == 1 and added[0].new == 5
    assert '<span class="sa">f</span>' in added[0].html or 'class="s' in added[0].html
    assert any('<span class="k">def</span>' in r.html for r in rows)  # Pygments, server-side
    # the docstring spans lines: each line's HTML stays balanced
    assert all(r.html.count("<span") == r.html.count("</span>") for r in rows)
    folded = [s for s in view.segments if s.folded]
    assert folded and sum(len(s.rows) for s in folded) > 40  # the unchanged tail folds
    assert len(rows) == PY.count("\n") + 1  # every line is there to unfold
    pairs = diffs.split_rows(view.segments[0].rows)
    changed = [p for p in pairs if p.left is not None and p.left.kind == "-"]
    assert changed[0].right.kind == "+" and changed[0].right.new == changed[0].left.old


def test_fold_keeps_context_around_changes():
    def row(kind, n):
        return diffs.Row(kind, n if kind != "+" else None, n if kind != "-" else None, "")

    rows = (
        [row(" ", i) for i in range(1, 21)] + [row("+", 21)] + [row(" ", i) for i in range(22, 40)]
    )
    segments = diffs.fold(rows)
    assert [s.folded for s in segments] == [True, False, True]
    assert len(segments[1].rows) == 3 + 1 + 3


def test_line_positions_follow_later_commits(tmp_path):
    repository, _rig, worktree, head = make_change(tmp_path)
    text = PY.replace('"hello " + name', 'f"hello {name}!"')
    later = commit_file(
        worktree, "app.py", "# header\n" + text.replace("return 3\n", "return 33\n")
    )
    anchors = [
        diffs.LineAnchor(1, head, "app.py", 5),  # greet's body: moved down one line
        diffs.LineAnchor(2, head, "app.py", text.splitlines().index("    return 3") + 1),
    ]
    found = diffs.lines_now(repository, later, anchors)
    assert found[1] == 6
    assert found[2] is None  # that line was changed: outdated


def test_merge_request_and_landed_targets(tmp_path):
    repository, rig, _worktree, head = make_change(tmp_path)
    base = g.resolve_branch(repository.path, "main")
    mr = factories.merge_request(
        rig=rig,
        repository=repository,
        source_branch="rig/api",
        target_branch="main",
        source_commit=head,
    )
    target = diffs.merge_request_diff_target(mr)
    assert (target.base, target.head, target.kind) == (base, head, "merge_request")
    MergeRequest.objects.filter(pk=mr.pk).update(
        state="merged", target_commit=base, merge_commit=head
    )
    mr.refresh_from_db()
    landed = diffs.merge_request_diff_target(mr)
    assert landed.kind == "landed" and landed.label.startswith("landed on main in ")


# --- the board's pages ---------------------------------------------------------------------------


def test_the_diff_page_shows_the_tree_and_a_file_on_demand(tmp_path, viewer_client):
    _, rig, _, _head = make_change(tmp_path)
    page = viewer_client.get(reverse("board:rig-diff", args=[rig.id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "3 files" in html and "docs/old.md → docs/new.md" in html
    assert 'id="comment-form-tpl"' not in html  # a viewer reads only
    url = reverse("board:rig-diff-file", args=[rig.id])
    part = viewer_client.get(url, {"path": "app.py"})
    assert part.status_code == 200
    body = part.content.decode()
    assert 'class="diff diff-unified' in body and "Show " in body and "unchanged lines" in body
    split = viewer_client.get(url, {"path": "app.py", "view": "split"}).content.decode()
    assert 'class="diff diff-split' in split
    binary = viewer_client.get(url, {"path": "logo.png"}).content.decode()
    assert 'data-summary="binary"' in binary


def test_bad_input_on_the_diff_file_is_a_400_naming_it(tmp_path, viewer_client):
    _, rig, _, _ = make_change(tmp_path)
    url = reverse("board:rig-diff-file", args=[rig.id])
    missing = viewer_client.get(url, HTTP_ACCEPT="application/json")
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "path"
    other = viewer_client.get(url, {"path": "nope.py"}, HTTP_ACCEPT="application/json")
    assert other.status_code == 400 and "not a file this change touches" in str(other.json())
    view = viewer_client.get(url, {"path": "app.py", "view": "3d"}, HTTP_ACCEPT="application/json")
    assert view.status_code == 400 and view.json()["error"]["field"] == "view"
    assert viewer_client.get(reverse("board:rig-diff", args=[999999])).status_code == 404


def test_a_large_file_is_summarised_until_asked(tmp_path, viewer_client, monkeypatch):
    _, rig, _, _ = make_change(tmp_path)
    monkeypatch.setattr(diffs, "LARGE_FILE_LINES", 1)
    url = reverse("board:rig-diff-file", args=[rig.id])
    body = viewer_client.get(url, {"path": "app.py"}).content.decode()
    assert 'data-summary="large"' in body
    full = viewer_client.get(url, {"path": "app.py", "full": "1"}).content.decode()
    assert "diff-unified" in full


def test_a_rig_without_a_branch_says_why(viewer_client):
    rig = factories.rig(state=Rig.State.REQUESTED)
    page = viewer_client.get(reverse("board:rig-diff", args=[rig.id]))
    assert page.status_code == 200 and 'id="diff-error"' in page.content.decode()


def test_a_landed_leg_shows_its_merge_request(tmp_path, viewer_client):
    repository, rig, _, head = make_change(tmp_path)
    base = g.resolve_branch(repository.path, "main")
    mr = factories.merge_request(
        rig=rig,
        repository=repository,
        source_branch="rig/api",
        target_branch="main",
        source_commit=head,
        state="merged",
        target_commit=base,
        merge_commit=head,
    )
    leg = factories.leg(rig=rig, state=Leg.State.LANDED)
    answer = viewer_client.get(reverse("board:leg-diff", args=[leg.id]))
    assert answer.status_code == 302
    assert answer.url == reverse("board:mr-diff", args=[mr.id])
    page = viewer_client.get(answer.url).content.decode()
    assert "landed on main in" in page


def test_comments_show_on_their_line_then_outdated(tmp_path, operator_client, operator):
    _repository, rig, worktree, head = make_change(tmp_path)
    target = diffs.rig_diff_target(rig)
    answer = operator_client.post(
        reverse("board:rig-review", args=[rig.id]),
        {
            "path": "app.py",
            "line": "5",
            "side": "new",
            "commit": head,
            "base_commit": target.base,
            "excerpt": '    return f"hello {name}!"',
            "text": "Use a template here.",
        },
        HTTP_ACCEPT="application/json",
    )
    assert answer.status_code == 200, answer.content
    comment = ReviewComment.objects.get()
    notice = Notification.objects.get(rig=rig, kind="review_comment")
    assert notice.changes["file"] == "app.py" and notice.changes["line"] == 5
    assert notice.changes["excerpt"].strip().startswith("return f")
    assert notice.changes["text"] == "Use a template here."
    url = reverse("board:rig-diff-file", args=[rig.id])
    body = operator_client.get(url, {"path": "app.py"}).content.decode()
    assert f'id="thread-{comment.id}"' in body and "data-outdated" not in body
    # the agent changes that very line: the comment is outdated
    commit_file(worktree, "app.py", PY.replace('"hello " + name', '"hi " + name'), "fix")
    body = operator_client.get(url, {"path": "app.py"}).content.decode()
    assert f'id="thread-{comment.id}"' in body and "data-outdated" in body
    # resolving it resolves the notice
    operator_client.post(
        reverse("board:review-comment-resolve", args=[comment.id]), HTTP_ACCEPT="application/json"
    )
    notice.refresh_from_db()
    comment.refresh_from_db()
    assert comment.state == "resolved" and notice.state == "resolved"


def test_viewers_and_agents_cannot_comment_on_the_board(tmp_path, viewer_client):
    _, rig, _, _head = make_change(tmp_path)
    answer = viewer_client.post(
        reverse("board:rig-review", args=[rig.id]),
        {"text": "hi"},
        HTTP_ACCEPT="application/json",
    )
    assert answer.status_code == 403
    assert not ReviewComment.objects.exists()


def test_bad_comments_are_400s_naming_every_field(tmp_path, operator_client):
    _, rig, _, _ = make_change(tmp_path)
    answer = operator_client.post(
        reverse("board:rig-review", args=[rig.id]),
        {"text": "", "line": "0", "commit": "xyz"},
        HTTP_ACCEPT="application/json",
    )
    assert answer.status_code == 400
    fields = {e["field"] for e in answer.json()["error"]["errors"]}
    assert {"text", "line", "commit"} <= fields
    answer = operator_client.post(
        reverse("board:rig-review", args=[rig.id]),
        {"text": "on a line", "line": "3"},
        HTTP_ACCEPT="application/json",
    )
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "path"


def test_the_diff_page_and_file_take_a_fixed_number_of_queries(tmp_path, viewer_client):
    _, rig, _, head = make_change(tmp_path)

    def counts():
        with CaptureQueriesContext(connection) as page:
            viewer_client.get(reverse("board:rig-diff", args=[rig.id]))
        with CaptureQueriesContext(connection) as part:
            viewer_client.get(reverse("board:rig-diff-file", args=[rig.id]), {"path": "app.py"})
        return len(page), len(part)

    reviews.review_comment_add(rig=rig, text="first", by="olive")  # (none: no answers to read)
    before = counts()
    for n in range(1, 13):
        comment = reviews.review_comment_add(
            rig=rig, text=f"c{n}", by="olive", path="app.py", line=n, commit=head
        )
        reviews.review_comment_reply(comment=comment, text="ok", by="ada", by_agent=True)
        reviews.review_comment_add(rig=rig, text=f"whole {n}", by="olive")
    after = counts()
    assert after == before, (before, after)
    assert before[0] <= 12 and before[1] <= 12


def test_escaped_html_in_code(tmp_path, viewer_client):
    _, rig, worktree, _ = make_change(tmp_path)
    commit_file(worktree, "page.html", "<script>alert(1)</script>\n", "html")
    body = viewer_client.get(
        reverse("board:rig-diff-file", args=[rig.id]), {"path": "page.html"}
    ).content.decode()
    assert "<script>alert" not in body and re.search(r"&lt;.*script", body)
