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
