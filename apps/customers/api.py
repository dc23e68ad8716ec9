"""Customer export for managers: `GET /api/v1/customers/export?format=csv|json` (staff with the export permission)."""

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import models
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from apps.core.permissions import StaffPermission
from apps.customers import services
from apps.customers.models import Customer

EXPORT_PERMISSION = "customers.export_customer"


async def _async_chunks(chunks: Iterator[str]) -> AsyncIterator[str]:
    """Under ASGI Django buffers a synchronous iterator whole; hand it out chunk by chunk instead."""
    done = object()
    pull = sync_to_async(next, thread_sensitive=True)
    while (chunk := await pull(chunks, done)) is not done:
        yield chunk


def export_response(request, queryset, fmt: str) -> StreamingHttpResponse:
    """A streamed download of `queryset` in `fmt` (csv / json), streamed under WSGI and ASGI alike."""
    chunks = services.export(queryset, fmt)
    if isinstance(getattr(request, "_request", request), ASGIRequest):
        chunks = _async_chunks(chunks)
    response = StreamingHttpResponse(chunks, content_type=services.export_content_type(fmt))
    filename = f"customers-{timezone.localtime():%Y%m%d-%H%M}.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _json_export_schema() -> dict:
    """The JSON export: an array of objects keyed by the ERP's column ids (services.export_json)."""
    properties = {}
    for field_name, key in Customer.ERP_COLUMNS:
        field = Customer._meta.get_field(field_name)
        properties[key] = {"type": "integer" if isinstance(field, models.IntegerField) else "string"}
        if field.null:
            properties[key]["nullable"] = True
    return {"type": "array", "items": {"type": "object", "properties": properties, "required": list(properties)}}


class CustomerExportView(APIView):
    permission_classes = [StaffPermission(EXPORT_PERMISSION, "需要后台账号并拥有“可以导出客户”权限")]
    renderer_classes = [JSONRenderer]

    def perform_content_negotiation(self, request, force=False):
        # `format` names the export format here, not a DRF renderer: errors are always JSON.
        return JSONRenderer(), JSONRenderer.media_type

    @extend_schema(
        parameters=[OpenApiParameter("format", OpenApiTypes.STR, enum=list(services.EXPORT_FORMATS), default="csv")],
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            (200, "application/json"): _json_export_schema(),
        },
        summary="导出客户（CSV 带 BOM / JSON），13 个 ERP 字段",
    )
    def get(self, request):
        fmt = request.query_params.get("format", "csv").lower()
        if fmt not in services.EXPORT_FORMATS:
            raise ValidationError({"format": ["format 只能是 csv 或 json"]})
        return export_response(request, Customer.objects.all(), fmt)
