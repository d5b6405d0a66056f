"""The /admin routes: refused without a configured token, 401 without the right bearer token, open with it."""

from dataclasses import dataclass

import pytest

from model_service.api.admin_auth import AdminToken, AdminTokenSettingsError
from model_service.core.config import Settings

TOKEN = "s3cr3t-admin-token_with.all~the+allowed/chars=="
# Every /admin route, so that a route added without the dependency fails here.
ADMIN_ROUTES = [
    ("GET", "/admin/faults", None),
    ("PUT", "/admin/faults", {"latency_ms": 0, "error_rate": 0.0}),
    ("GET", "/admin/stats", None),
    ("POST", "/admin/model", {}),
]


def admin_settings(shipped_settings: Settings, **overrides: object) -> Settings:
    fields = {"model_dir": shipped_settings.model_dir, "data_dir": shipped_settings.data_dir, "admin_token": None}
    return Settings(**{**fields, **overrides})


def send(client, method: str, path: str, body: dict | None, authorization: str | None = None):
    # The test client's default header is replaced, or removed so none is sent at all.
    request = client.build_request(method, path, json=body)
    if authorization is None:
        request.headers.pop("Authorization", None)
    else:
        request.headers["Authorization"] = authorization
    return client.send(request)


def assert_json_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code


def test_every_admin_route_is_in_the_table(client):
    routes = {
        (method.upper(), path)
        for path, operations in client.app.openapi()["paths"].items()
        if path.startswith("/admin")
        for method in operations
    }

    assert routes == {(method, path) for method, path, _ in ADMIN_ROUTES}


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_without_a_configured_token_every_admin_route_is_refused_even_with_a_token(
    shipped_settings, client_for, method, path, body
):
    client = client_for(admin_settings(shipped_settings))

    response = send(client, method, path, body, f"Bearer {TOKEN}")

    assert_json_error(response, 403, "admin_disabled")
    assert "MODEL_SERVICE__ADMIN_TOKEN" in response.json()["error"]["message"]


@dataclass(frozen=True)
class BadCredential:
    description: str
    authorization: str | None
    challenge: str


BAD_CREDENTIALS = [
    BadCredential("no Authorization header", None, 'Bearer realm="model-service-admin"'),
    BadCredential("another scheme", f"Basic {TOKEN}", 'Bearer realm="model-service-admin"'),
    BadCredential("an empty bearer token", "Bearer ", 'Bearer realm="model-service-admin"'),
    BadCredential("a wrong token", "Bearer not-the-token", 'Bearer realm="model-service-admin", error="invalid_token"'),
    BadCredential(
        "the token with one character missing",
        f"Bearer {TOKEN[:-1]}",
        'Bearer realm="model-service-admin", error="invalid_token"',
    ),
    BadCredential(
        "the token with a suffix", f"Bearer {TOKEN}x", 'Bearer realm="model-service-admin", error="invalid_token"'
    ),
]


@pytest.mark.parametrize("case", BAD_CREDENTIALS, ids=lambda case: case.description)
@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_a_missing_or_wrong_credential_is_a_401_with_a_bearer_challenge(
    shipped_settings, client_for, method, path, body, case
):
    client = client_for(admin_settings(shipped_settings, admin_token=TOKEN))
    faults_before = send(client, "GET", "/admin/faults", None, f"Bearer {TOKEN}").json()

    response = send(client, method, path, body, case.authorization)

    assert_json_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == case.challenge
    assert send(client, "GET", "/admin/faults", None, f"Bearer {TOKEN}").json() == faults_before


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_right_token_opens_the_admin_routes_whatever_the_scheme_case(shipped_settings, client_for, scheme):
    client = client_for(admin_settings(shipped_settings, admin_token=TOKEN))

    changed = send(client, "PUT", "/admin/faults", {"latency_ms": 7, "error_rate": 0.0}, f"{scheme} {TOKEN}")

    assert changed.status_code == 200, changed.text
    assert send(client, "GET", "/admin/faults", None, f"{scheme} {TOKEN}").json() == {
        "latency_ms": 7,
        "error_rate": 0.0,
    }


def test_the_token_file_works_and_its_trailing_line_break_is_not_part_of_the_token(
    shipped_settings, client_for, tmp_path
):
    token_file = tmp_path / "admin.token"
    token_file.write_text(f"{TOKEN}\n")
    client = client_for(admin_settings(shipped_settings, admin_token_file=token_file))

    assert send(client, "GET", "/admin/stats", None, f"Bearer {TOKEN}").status_code == 200
    assert_json_error(send(client, "GET", "/admin/stats", None, "Bearer not-the-token"), 401, "unauthorized")


def test_the_token_file_is_read_from_the_environment_variable(shipped_settings, client_for, tmp_path, monkeypatch):
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    monkeypatch.setenv("MODEL_SERVICE__ADMIN_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("MODEL_SERVICE__ADMIN_TOKEN", "")

    client = client_for(Settings(model_dir=shipped_settings.model_dir, data_dir=shipped_settings.data_dir))

    assert send(client, "GET", "/admin/stats", None, f"Bearer {TOKEN}").status_code == 200


def test_routes_outside_admin_need_no_token(shipped_settings, client_for):
    client = client_for(admin_settings(shipped_settings, admin_token=TOKEN))

    assert send(client, "POST", "/predict", {"data_id": "cust-000042"}).status_code == 200
    assert send(client, "GET", "/health", None).status_code == 200


@pytest.mark.parametrize(
    ("description", "overrides", "message"),
    [
        ("both variables set", {"admin_token": TOKEN, "admin_token_file": "TOKEN_FILE"}, "not both"),
        ("a token file that does not exist", {"admin_token_file": "MISSING"}, "cannot read"),
        ("an empty token file", {"admin_token_file": "EMPTY_FILE"}, "is empty"),
        ("a token with a space", {"admin_token": "two words"}, "cannot carry"),
        ("a token file of two lines", {"admin_token_file": "TWO_LINES"}, "cannot carry"),
    ],
)
def test_unusable_token_settings_stop_the_start_without_echoing_the_token(
    shipped_settings, tmp_path, description, overrides, message
):
    files = {"TOKEN_FILE": TOKEN, "EMPTY_FILE": "\n", "TWO_LINES": f"{TOKEN}\nsecond-line\n"}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    paths = {key: tmp_path / value if key == "admin_token_file" else value for key, value in overrides.items()}

    with pytest.raises(AdminTokenSettingsError, match=message) as raised:
        AdminToken.from_settings(admin_settings(shipped_settings, **paths))

    assert TOKEN not in str(raised.value), description
    assert "second-line" not in str(raised.value), description


def test_an_empty_token_variable_means_admin_is_disabled(shipped_settings, monkeypatch):
    monkeypatch.setenv("MODEL_SERVICE__ADMIN_TOKEN", "")
    monkeypatch.setenv("MODEL_SERVICE__ADMIN_TOKEN_FILE", "")

    settings = Settings(model_dir=shipped_settings.model_dir, data_dir=shipped_settings.data_dir)

    assert not AdminToken.from_settings(settings).enabled


def test_the_settings_never_print_the_token(shipped_settings):
    settings = admin_settings(shipped_settings, admin_token=TOKEN)

    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings.model_dump())
