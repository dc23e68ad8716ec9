from drf_spectacular.generators import SchemaGenerator

PIPELINE_PATHS = {
    "/api/v1/auth/login": "post",
    "/api/v1/auth/refresh": "post",
    "/api/v1/heartbeat": "post",
    "/api/v1/messages": "post",
    "/api/v1/replies": "get",
    "/api/v1/replies/{reply_id}": "get",
    "/api/v1/replies/{reply_id}/ack": "post",
    "/api/v1/stats": "get",
}


def test_every_pipeline_endpoint_is_described():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, method in PIPELINE_PATHS.items():
        operation = schema["paths"][path][method]
        assert operation.get("summary"), path
        assert "401" in operation["responses"] or path.startswith("/api/v1/auth"), path
    ingest = schema["paths"]["/api/v1/messages"]["post"]
    assert {"202", "200", "400", "401", "413", "429"} <= set(ingest["responses"])
    assert ingest["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("IngestRequest")
    assert any(s.get("agentJWT") is not None for s in ingest.get("security", []))
