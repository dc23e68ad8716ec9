"""Every error of the REST API answers `{"detail", "code"}` (apps.core.api, PROTOCOL.md "Error bodies"), and the
OpenAPI schema declares those bodies on every operation (apps.core.openapi).

Throttling and an unhandled exception have no endpoint of their own to provoke them on demand: this module is
also the URLconf of the tests marked `urls`: the project's URLs plus views that throttle, fail, or refuse with a map."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import path
from drf_spectacular.generators import SchemaGenerator
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from apps.agents.tests.factories import AgentFactory
from apps.messages.tests.helpers import make_agent
from wxcs.urls import handler400, handler403, handler404, handler500
from wxcs.urls import urlpatterns as project_urlpatterns

pytestmark = pytest.mark.django_db


class OncePerMinute(AnonRateThrottle):
    rate = "1/min"


class ThrottledView(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes = [OncePerMinute]

    def get(self, request):
        return Response({"ok": True})


class ListDetailView(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        raise exceptions.PermissionDenied({"reason": ["closed"]})


def failing_view(request):
    raise RuntimeError("a bug")


urlpatterns = [
    path("api/v1/test-throttled", ThrottledView.as_view()),
    path("api/v1/test-failing", failing_view),
    path("api/v1/test-list-detail", ListDetailView.as_view()),
    *project_urlpatterns,
]
__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


def error(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response.content
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    return body


def test_validation_errors_map_fields_to_messages(client):
    response = client.post("/api/v1/auth/login", {}, content_type="application/json")
    body = error(response)
    assert response.status_code == 400 and body["code"] == "invalid"
    assert set(body["detail"]) == {"agent_id", "api_key"} and all(body["detail"].values())


def test_a_body_that_is_not_json_is_malformed_and_a_form_is_unsupported(client):
    response = client.post("/api/v1/auth/login", "{not json", content_type="application/json")
    assert response.status_code == 400 and error(response)["code"] == "malformed"
    assert isinstance(response.json()["detail"], str)
    response = client.post("/api/v1/auth/login", {"agent_id": "a", "api_key": "b"})  # multipart form
    assert response.status_code == 415 and error(response)["code"] == "unsupported_media_type"


def test_agent_endpoints_answer_401_with_the_token_codes(client):
    response = client.post("/api/v1/heartbeat", {}, content_type="application/json")
    assert response.status_code == 401 and error(response)["code"] == "missing_token"
    assert response["WWW-Authenticate"].startswith("Bearer")
    response = client.post(
        "/api/v1/heartbeat", {}, content_type="application/json", headers={"Authorization": "Bearer not-a-jwt"}
    )
    assert response.status_code == 401 and error(response)["code"] == "invalid_token"
    response = client.post(
        "/api/v1/auth/login", {"agent_id": AgentFactory().id, "api_key": "wrong"}, content_type="application/json"
    )
    assert response.status_code == 401 and error(response)["code"] == "invalid_credentials"


def test_staff_endpoints_answer_403_without_a_session_or_the_permission(client):
    response = client.get("/api/v1/customers/export?format=json")
    assert response.status_code == 403 and error(response)["code"] == "not_authenticated"
    client.force_login(get_user_model().objects.create_user("clerk", password="pw", is_staff=True))
    response = client.get("/api/v1/customers/export?format=json")
    assert response.status_code == 403 and error(response)["code"] == "permission_denied"
    assert "导出" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)  # the token check reads enabled agents on its own connection
def test_unknown_objects_urls_and_methods(client):
    _, token = make_agent()
    response = client.get("/api/v1/replies/987654", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404 and error(response)["code"] == "not_found"
    response = client.get("/api/v1/no-such-endpoint")
    assert response.status_code == 404 and error(response)["code"] == "not_found"
    response = client.get("/api/v1/auth/login")
    assert response.status_code == 405 and error(response)["code"] == "method_not_allowed"
    response = client.get("/api/v1/replies", headers={"Authorization": f"Bearer {token}", "Accept": "text/html"})
    assert response.status_code == 406 and error(response)["code"] == "not_acceptable"


def test_pages_outside_the_api_keep_djangos_error_pages(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


@pytest.mark.urls(__name__)
def test_throttled_requests_get_429_with_retry_after(client):
    assert client.get("/api/v1/test-throttled").status_code == 200
    response = client.get("/api/v1/test-throttled")
    assert response.status_code == 429 and error(response)["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 60


@pytest.mark.urls(__name__)
def test_an_api_error_raised_with_a_message_map_keeps_it_as_detail(client):
    response = client.get("/api/v1/test-list-detail")
    assert response.status_code == 403
    assert error(response) == {"detail": {"reason": ["closed"]}, "code": "permission_denied"}


@pytest.mark.urls(__name__)
def test_an_unhandled_exception_answers_500_without_details():
    response = Client(raise_request_exception=False).get("/api/v1/test-failing")
    body = error(response)
    assert response.status_code == 500 and body["code"] == "server_error" and "a bug" not in body["detail"]


def test_every_operation_declares_its_error_bodies():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]
    assert set(components["Error"]["required"]) == {"detail", "code"}
    assert set(components["ValidationError"]["required"]) == {"detail", "code"}
    expected = {
        ("/api/v1/auth/login", "post"): {"400", "401", "415"},
        ("/api/v1/heartbeat", "post"): {"400", "401", "415"},
        ("/api/v1/replies", "get"): {"401"},
        ("/api/v1/replies/{reply_id}", "get"): {"401", "404"},
        ("/api/v1/replies/{reply_id}/ack", "post"): {"400", "401", "404", "415"},
        ("/api/v1/stats", "get"): {"400", "401", "403"},
        ("/api/v1/customers/export", "get"): {"400", "403"},
        ("/api/v1/messages", "post"): {"400", "401", "413", "429"},
    }
    for (route, method), statuses in expected.items():
        responses = schema["paths"][route][method]["responses"]
        assert statuses <= set(responses), (route, statuses - set(responses))
    for route, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    expected_ref = "ValidationError" if status == "400" else "Error"
                    assert ref == f"#/components/schemas/{expected_ref}", (method, route, status)
