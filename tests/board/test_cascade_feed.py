"""The convoy page's cascade feed (Django's test client): one card per landed merge with its own
consequences, newest first; the cascade's chain as a tree in the card of the merge that started
it; filters by rig and kind; pages of ten; other notices apart; bounded queries."""

import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import Notification, NotificationVersion
from rigs.models import MergeRequest, Rig
from tests import factories

pytestmark = pytest.mark.django_db

K = Notification.Kind
SEV = Notification.Severity
START = timezone.now() - timedelta(hours=2)


def card_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<details class="feed-card[^"]*" id="feed-mr-(\d+)"', html)]


def card(html: str, mr_id: int) -> str:
    """The html of one card."""
    start = html.index(f'id="feed-mr-{mr_id}"')
    return html[start : html.index("</details>", start)]


def told_part(card_html: str) -> str:
    """A card's "Who was told" block (its own notices), without the cascade tree."""
    start = card_html.index("<h3>Who was told</h3>")
    return card_html[start : card_html.index("<h3>Follow-up beads</h3>", start)]


def open_cards(html: str) -> list[int]:
    return [
        int(n)
        for n in re.findall(r'<details class="feed-card[^"]*" id="feed-mr-(\d+)"[^>]*open', html)
    ]


def landed(rig: Rig | None, minutes: int, **kw) -> MergeRequest:
    kw.setdefault("changed_paths", ["auth/tokens.py", "docs/tokens.md"])
    return factories.merge_request(
        rig=rig,
        state=MergeRequest.State.MERGED,
        target_commit="1" * 40,
        merge_commit="2" * 40,
        finished_at=START + timedelta(minutes=minutes),
        **kw,
    )


def tell(rig, mr, cascade, depth=0, kind=K.BASE_MOVED, severity=SEV.INFO, minutes=0, **kw):
    note = factories.notification(
        rig=rig,
        kind=kind,
        severity=severity,
        summary=kw.pop("summary", f"{kind} for {rig.slug} from #{mr.id if mr else '-'}"),
        action=kw.pop("action", "Rebase when convenient."),
        source_merge_request=mr,
        source_rig=mr.rig if mr else kw.pop("source_rig", None),
        cascade=cascade,
        depth=depth,
        **kw,
    )
    when = START + timedelta(minutes=minutes, seconds=1)
    Notification.objects.filter(pk=note.pk).update(created_at=when)
    NotificationVersion.objects.filter(notification=note).update(created_at=when)
    return note


@pytest.fixture
def scene():
    """A convoy with rigs api, web and docs; another convoy's rig `other`.

    #a (api) started cascade C1: web base moved, docs interface changed, other base moved, and a
    follow-up bead in docs. #d (docs) answered it (C1 depth 1: web, api); #w (web) answered that
    (C1 depth 2: api). #b (api again) started C2 (web: dependencies changed). Besides: an overlap
    notice (no merge), a conflicted merge of web (refused: not landed), a merge of `other` that
    told none of the convoy's rigs."""
    repo = factories.repository(name="app")
    convoy = factories.convoy(repository=repo, title="Auth")
    type(convoy).objects.filter(pk=convoy.pk).update(created_at=START)
    convoy.refresh_from_db()
    rigs = {}
    for n, slug in enumerate(["api", "web", "docs"]):
        rigs[slug] = factories.rig(repository=repo, slug=slug, state=Rig.State.WORKING)
        factories.leg(convoy=convoy, key=slug, rig=rigs[slug], position=n)
    other = factories.rig(repository=repo, slug="other", state=Rig.State.WORKING)
    api, web, docs = rigs["api"], rigs["web"], rigs["docs"]
    c1, c2 = uuid.uuid4(), uuid.uuid4()

    a = landed(api, 10, changed_paths=["auth/tokens.py", "auth/views.py"])
    tell(web, a, c1, minutes=10, source_commits="1" * 40 + ".." + "2" * 40)
    tell(
        docs,
        a,
        c1,
        kind=K.INTERFACE_CHANGED,
        severity=SEV.WARNING,
        minutes=10,
        summary="Interface changed: auth/tokens.py (make_token)",
        changes={"files": [{"path": "auth/tokens.py", "added": 7, "deleted": 2, "status": "M"}]},
    )
    tell(other, a, c1, minutes=10)
    bead = factories.bead(rig=docs, title="Update the docs for make_token")
    bead.discovered_from_merge_request = a
    bead.save(update_fields=["discovered_from_merge_request"])

    d = landed(docs, 20, changed_paths=["docs/tokens.md"])
    tell(
        web,
        d,
        c1,
        depth=1,
        kind=K.INTERFACE_CHANGED,
        severity=SEV.WARNING,
        minutes=20,
        summary="Docs answer: tokens documented",
    )
    tell(api, d, c1, depth=1, minutes=20, summary="Docs answer moved the api base")

    w = landed(web, 30, changed_paths=["web/login.js"])
    tell(api, w, c1, depth=2, minutes=30, summary="Web answer moved the api base")

    b = landed(api, 40, changed_paths=["requirements.txt"])
    tell(
        web,
        b,
        c2,
        kind=K.DEPENDENCIES_CHANGED,
        severity=SEV.WARNING,
        minutes=40,
        summary="Dependencies changed: requirements.txt; reinstall",
    )

    tell(
        api,
        None,
        uuid.uuid4(),
        kind=K.OVERLAP,
        severity=SEV.WARNING,
        minutes=45,
        summary="Overlapping work with rig web: auth/views.py",
        source_rig=web,
    )
    refused = factories.merge_request(
        rig=web, state=MergeRequest.State.CONFLICTED, finished_at=START + timedelta(minutes=50)
    )
    tell(
        web,
        refused,
        uuid.uuid4(),
        kind=K.MERGE_CONFLICTED,
        severity=SEV.CRITICAL,
        minutes=50,
        summary="Your merge conflicts with main in web/login.js",
    )
    unrelated = landed(other, 55, changed_paths=["other.py"])
    return {
        "convoy": convoy,
        "rigs": rigs,
        "mrs": {"a": a, "d": d, "w": w, "b": b},
        "refused": refused,
        "unrelated": unrelated,
        "bead": bead,
    }


def page(client, scene, query: str = "") -> str:
    response = client.get(f"/convoys/{scene['convoy'].id}/{query}")
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def test_one_card_per_landed_merge_newest_first(operator_client, scene):
    html = page(operator_client, scene)
    m = scene["mrs"]
    assert card_ids(html) == [m["b"].id, m["w"].id, m["d"].id, m["a"].id]
    assert scene["refused"].id not in card_ids(html)  # refused: not landed
    assert scene["unrelated"].id not in card_ids(html)  # told none of the convoy's rigs
    assert open_cards(html) == [m["b"].id]  # the newest open, the others closed
    assert "4 landed merges" in html


def test_a_merge_from_elsewhere_whose_cascade_reached_the_convoy_has_a_card(operator_client, scene):
    other, web = Rig.objects.get(slug="other"), scene["rigs"]["web"]
    outsider = landed(other, 60)
    tell(web, outsider, uuid.uuid4(), minutes=60, summary="Base moved by other")
    html = page(operator_client, scene)
    assert card_ids(html)[0] == outsider.id
    assert "Base moved by other" in told_part(card(html, outsider.id))


def test_a_card_lists_only_its_own_consequences(operator_client, scene):
    html = page(operator_client, scene)
    m = scene["mrs"]
    first = card(html, m["a"].id)
    told = told_part(first)
    # who was told what, grouped by rig: its own three notices
    assert re.findall(r'<li data-rig="([\w-]+)">', told) == ["docs", "other", "web"]
    assert "Interface changed: auth/tokens.py (make_token)" in told
    assert "Docs answer" not in first and "Web answer" not in first
    assert "Dependencies changed" not in first
    # what changed, with the line counts its notices carried, and the range
    assert "auth/views.py" in first and "+7" in first and "\u22122" in first
    assert "1111111111..2222222222" in first
    # the follow-up bead it made, in its card only
    assert scene["bead"].short_id in first
    assert scene["bead"].short_id not in card(html, m["d"].id)
    later = told_part(card(html, m["d"].id))
    assert "Docs answer: tokens documented" in later and "Docs answer moved the api base" in later
    assert "make_token" not in later


def test_the_cascade_chain_is_a_tree_in_the_card_that_started_it(operator_client, scene):
    html = page(operator_client, scene)
    m = scene["mrs"]
    first = card(html, m["a"].id)
    nodes = re.findall(r'class="tree-node[^"]*" data-depth="(\d)" data-level="(\d)"', first)
    assert nodes == [("0", "0"), ("1", "1"), ("2", "2")]
    assert "this merge" in first
    assert f'href="#feed-mr-{m["d"].id}"' in first and f'href="#feed-mr-{m["w"].id}"' in first
    # a later step says which cascade it continues, and has no tree of its own
    for key, depth in (("d", 1), ("w", 2)):
        later = card(html, m[key].id)
        assert f'Continues the cascade started by <a href="#feed-mr-{m["a"].id}"' in later
        assert f"(depth {depth})" in later and "cascade-tree" not in later
    # a cascade with one step has no tree
    assert "cascade-tree" not in card(html, m["b"].id)


def test_two_answers_at_one_depth_hang_under_the_step_they_answered(operator_client, scene):
    """#d answered #a (depth 1); #x (web) answered #a too: both under depth 0, and #w (web,
    depth 2) under #d, whose notice it answered."""
    m, web, api = scene["mrs"], scene["rigs"]["web"], scene["rigs"]["api"]
    cascade = Notification.objects.filter(source_merge_request=m["a"]).first().cascade
    x = landed(web, 25)
    tell(api, x, cascade, depth=1, minutes=25, summary="Web's first answer")
    first = card(page(operator_client, scene), m["a"].id)
    nodes = re.findall(r'data-depth="(\d)" data-level="(\d)"', first)
    assert nodes == [("0", "0"), ("1", "1"), ("2", "2"), ("1", "1")]


def test_other_notices_are_apart_and_collapsed(operator_client, scene):
    html = page(operator_client, scene)
    other = html[html.index('id="feed-other"') :]
    assert re.search(r'<details class="feed-other" id="feed-other">', html)  # not open
    assert 'Other notices <span class="count">(2)</span>' in other
    assert "Overlapping work with rig web" in other
    assert "Your merge conflicts with main" in other
    cards = html[: html.index('id="feed-other"')]
    assert "Overlapping work" not in cards and "Your merge conflicts" not in cards


def test_filter_by_rig(operator_client, scene):
    m = scene["mrs"]
    html = page(operator_client, scene, "?feed_rig=docs")
    # from docs (#d), or told docs (#a); not #b (told web) nor #w (told api)
    assert card_ids(html) == [m["d"].id, m["a"].id]
    first = told_part(card(html, m["a"].id))
    assert re.findall(r'<li data-rig="([\w-]+)">', first) == ["docs"]
    assert "1 of 3 notices match the filter" in first
    # a merge from the rig shows all it told, the rigs that must act first
    assert re.findall(r'<li data-rig="([\w-]+)">', told_part(card(html, m["d"].id))) == [
        "web",
        "api",
    ]
    assert "<option selected>docs</option>" in html
    assert 'Other notices <span class="count">(0)</span>' in html


def test_filter_by_kind_and_both(operator_client, scene):
    m = scene["mrs"]
    html = page(operator_client, scene, "?feed_kind=dependencies_changed")
    assert card_ids(html) == [m["b"].id]
    html = page(operator_client, scene, "?feed_kind=interface_changed&feed_rig=web")
    assert card_ids(html) == [m["d"].id]
    html = page(operator_client, scene, "?feed_kind=overlap")
    assert card_ids(html) == []
    assert "No landed merge matches these filters." in html
    assert 'Other notices <span class="count">(1)</span>' in html
    assert "Overlapping work with rig web" in html


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?feed_kind=bogus", "feed_kind"),
        ("?feed_rig=nope", "feed_rig"),
        ("?feed_rig=other", "feed_rig"),  # a rig, but not one of this convoy's
        ("?feed_page=x", "feed_page"),
        ("?feed_page=0", "feed_page"),
        ("?feed_page=%C2%B2", "feed_page"),
    ],
)
def test_bad_filter_values_are_a_400_naming_the_field(operator_client, scene, query, field):
    convoy_id = scene["convoy"].id
    for url in (f"/convoys/{convoy_id}/{query}", f"/convoys/{convoy_id}/feed/{query}"):
        response = operator_client.get(url)
        assert response.status_code == 400, url
        assert field in response.content.decode()
        answer = operator_client.get(url, HTTP_ACCEPT="application/json").json()
        assert answer["error"]["field"] == field


def test_pages_of_ten(operator_client, scene):
    api = scene["rigs"]["api"]
    extra = [landed(api, 100 + n) for n in range(19)]  # 23 cards in all
    html = page(operator_client, scene)
    newest = [mr.id for mr in reversed(extra)]
    assert card_ids(html) == newest[:10]
    assert open_cards(html) == [newest[0]]
    assert "page 1 of 3" in html
    assert 'href="/convoys/{}/?feed_page=2#feed"'.format(scene["convoy"].id) in html
    html = page(operator_client, scene, "?feed_page=2")
    assert card_ids(html) == [*newest[10:19], scene["mrs"]["b"].id]
    assert open_cards(html) == []  # only the newest of all is open
    assert 'rel="prev"' in html and 'rel="next"' in html
    html = page(operator_client, scene, "?feed_page=3")
    assert len(card_ids(html)) == 3 and card_ids(html)[-1] == scene["mrs"]["a"].id
    # past the last page: the last page
    assert card_ids(page(operator_client, scene, "?feed_page=99")) == card_ids(html)
    # filters stay in the page links
    html = page(operator_client, scene, "?feed_rig=api")
    assert "feed_rig=api&amp;feed_page=2" in html


def test_the_feed_has_its_own_live_fragment_with_the_page_filters(operator_client, scene):
    convoy_id, m = scene["convoy"].id, scene["mrs"]
    html = page(operator_client, scene, "?feed_rig=docs&feed_kind=interface_changed")
    assert (
        f'data-live-src="/convoys/{convoy_id}/feed/?feed_rig=docs&amp;feed_kind=interface_changed"'
        in html
    )
    fragment = operator_client.get(
        f"/convoys/{convoy_id}/feed/?feed_rig=docs&feed_kind=interface_changed"
    ).content.decode()
    assert fragment.startswith('<div class="feed-root"')
    # told docs something of that kind (#a), or docs' own that sent that kind (#d)
    assert card_ids(fragment) == [m["d"].id, m["a"].id]
    # the convoy's own live fragment no longer carries the feed
    live = operator_client.get(f"/convoys/{convoy_id}/live/").content.decode()
    assert "feed-card" not in live


def test_a_viewer_sees_the_feed(viewer_client, scene):
    html = page(viewer_client, scene)
    assert len(card_ids(html)) == 4


def _merges_with_consequences(scene, count: int, offset: int) -> None:
    api, web, docs = (scene["rigs"][s] for s in ("api", "web", "docs"))
    for n in range(count):
        mr = landed(api, 200 + offset + n)
        cascade = uuid.uuid4()
        tell(web, mr, cascade, minutes=200 + offset + n)
        tell(docs, mr, cascade, kind=K.INTERFACE_CHANGED, severity=SEV.WARNING)
        answer = landed(docs, 300 + offset + n)
        tell(web, answer, cascade, depth=1)
        bead = factories.bead(rig=docs)
        bead.discovered_from_merge_request = mr
        bead.save(update_fields=["discovered_from_merge_request"])
        tell(api, None, uuid.uuid4(), kind=K.OVERLAP)


def test_queries_do_not_grow_with_merges_and_notices(
    operator_client, scene, django_assert_max_num_queries
):
    convoy_id = scene["convoy"].id
    urls = [f"/convoys/{convoy_id}/", f"/convoys/{convoy_id}/feed/?feed_rig=docs"]
    _merges_with_consequences(scene, 1, 0)
    few = {}
    for url in urls:
        operator_client.get(url)  # (warm: the session, the content types)
        with CaptureQueriesContext(connection) as ctx:
            assert operator_client.get(url).status_code == 200
        few[url] = len(ctx)
    _merges_with_consequences(scene, 12, 50)  # 24 more merges: more than a page of cards
    for url in urls:
        with django_assert_max_num_queries(few[url]):
            html = operator_client.get(url).content.decode()
        assert len(card_ids(html)) == 10


def test_a_notice_updated_in_place_shows_in_each_landings_card_as_that_landing_left_it(
    operator_client, scene
):
    """A "base moved" notice is one row updated by every landing; each landing's card still
    shows what it told (its version), and only the latest asks for action."""
    from notifications.services import notification_send

    api, docs = scene["rigs"]["api"], scene["rigs"]["docs"]
    first, second = landed(api, 70), landed(api, 80)
    for mr, behind, severity in ((first, 2, SEV.WARNING), (second, 4, SEV.INFO)):
        notification_send(
            rig=docs,
            kind=K.BASE_MOVED,
            severity=severity,
            topic="base",
            summary=f"Your base moved: {behind} commit(s) behind main",
            source_merge_request=mr,
        )
    assert Notification.objects.filter(rig=docs, topic="base").count() == 1
    html = page(operator_client, scene)
    assert card_ids(html)[:2] == [second.id, first.id]
    older, newer = told_part(card(html, first.id)), told_part(card(html, second.id))
    assert "2 commit(s) behind" in older and "4 commit(s) behind" not in older
    assert "updated" in older  # a later landing replaced this version
    assert "4 commit(s) behind" in newer and "2 commit(s) behind" not in newer
