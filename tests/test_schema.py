from django.core.management import call_command


def test_openapi_schema_generates_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    # --fail-on-warn turns any drf-spectacular warning into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "openapi:" in out.read_text()


def test_pages_are_served(client, admin_user, db):
    assert client.get("/").status_code == 302  # login required
    assert client.get("/api/schema/").status_code == 200
    client.force_login(admin_user)
    assert client.get("/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"


def _schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield f"{method.upper()} {path}", operation


def test_every_operation_has_a_resource_tag_a_summary_and_a_description():
    from django.conf import settings

    schema = _schema()
    tags = [tag["name"] for tag in settings.SPECTACULAR_SETTINGS["TAGS"]]
    missing = []
    for name, operation in _operations(schema):
        # "v1" is what drf-spectacular tags every operation with when left alone
        if not operation.get("tags") or set(operation["tags"]) - set(tags):
            missing.append(f"{name}: tags {operation.get('tags')}")
        if not (operation.get("summary") or "").strip():
            missing.append(f"{name}: no summary")
        if not (operation.get("description") or "").strip():
            missing.append(f"{name}: no description")
    assert not missing, "\n".join(missing)
    used = {tag for _, operation in _operations(schema) for tag in operation["tags"]}
    assert used == set(tags)  # one tag per resource, each used
    summaries = [operation["summary"] for _, operation in _operations(schema)]
    assert len(summaries) == len(set(summaries))  # (no copy-pasted summary)


def test_errors_are_documented_with_examples():
    schema = _schema()
    error = schema["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["code", "message", "field", "errors"]
    for name, operation in _operations(schema):
        for status, response in operation["responses"].items():
            if not status.startswith("4") or "content" not in response:
                continue
            examples = response["content"]["application/json"].get("examples")
            assert examples, (name, status)
            value = next(iter(examples.values()))["value"]["error"]
            assert {"code", "message", "field", "errors"} <= set(value), (name, status)
    rigs = schema["paths"]["/api/v1/rigs/"]["get"]["responses"]["400"]
    query = rigs["content"]["application/json"]["examples"]["query"]["value"]["error"]
    assert query["code"] == "unknown_parameter"
    beads = schema["paths"]["/api/v1/beads/"]["post"]["responses"]["400"]
    fields = beads["content"]["application/json"]["examples"]["fields"]["value"]["error"]
    assert len(fields["errors"]) == 3 and fields["errors"][2]["field"] == "legs[1].depends_on"


def test_search_and_ordering_are_documented_where_lists_offer_them():
    schema = _schema()

    def query(path: str) -> dict:
        operation = schema["paths"][path]["get"]
        return {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}

    for path in ["convoys", "rigs", "beads", "merge-requests", "runs", "repositories"]:
        params = query(f"/api/v1/{path}/")
        assert {"search", "ordering", "limit", "offset"} <= set(params), path
        assert "created_at" in params["ordering"]["description"] or path == "repositories"
    assert "leg" in query("/api/v1/convoys/")["search"]["description"]
    for path in ["notifications", "events", "beads/blocked"]:  # read by hand, documented too
        params = query(f"/api/v1/{path}/")
        assert "rig" in params and "search" not in params and "ordering" not in params
    assert "worktree" in query("/api/v1/rigs/")
