import csv
import io
import json

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command

from apps.customers import services
from apps.customers.models import Customer
from apps.erp import services as erp_services

pytestmark = pytest.mark.django_db

HEADERS = [
    "ERP 编号", "客户名称", "销售人员", "客户分类", "客户状态", "联系人", "职务", "电话", "手机", "最新跟进",
    "联系人编号", "客户链接", "联系人链接",
]  # fmt: skip
KEYS = [
    "ord", "name", "catename", "sortname", "sort1name", "personname", "personjob", "phone", "mobile", "telintro",
    "person", "url", "personurl",
]  # fmt: skip


def parse_csv(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf"), "CSV must start with the UTF-8 BOM"
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


@pytest.fixture
def formula_customer(synced, erp_client, simulator):
    """A customer whose ERP name is a spreadsheet formula, synced like any other change."""
    simulator.rename(3005, '=HYPERLINK("http://evil.example","点我")')
    simulator.rename(3006, "+86 138 0000 0000", field="phone")
    erp_services.sync_erp(client=erp_client)
    return Customer.objects.get(erp_id=3005)


def test_csv_export_has_bom_chinese_headers_all_fields_and_neutralised_formulas(formula_customer, simulator):
    rows = parse_csv("".join(services.export_csv(Customer.objects.all())).encode("utf-8"))
    assert rows[0] == HEADERS
    assert len(rows) == 1 + 239
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id["3005"][1] == '\'=HYPERLINK("http://evil.example","点我")'
    assert by_id["3006"][7] == "'+86 138 0000 0000"
    expected = simulator.state.customer_row(simulator.state.by_ord[3208])
    assert by_id["3208"] == [str(expected[key]) for key in KEYS]
    assert all(len(row) == 13 for row in rows)


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_every_formula_prefix_is_neutralised(prefix):
    assert services.neutralise(f"{prefix}1+1") == f"'{prefix}1+1"
    assert services.neutralise("正常文本") == "正常文本"
    assert services.neutralise(None) == ""


def test_json_export_is_equivalent_to_csv(formula_customer):
    csv_rows = parse_csv("".join(services.export_csv(Customer.objects.all())).encode("utf-8"))
    objects = json.loads("".join(services.export_json(Customer.objects.all())))
    assert len(objects) == 239
    assert list(objects[0]) == KEYS
    assert [[services.neutralise(obj[key]) for key in KEYS] for obj in objects] == csv_rows[1:]
    assert next(obj for obj in objects if obj["ord"] == 3005)["name"].startswith("=HYPERLINK")


def test_empty_export_is_still_valid():
    assert parse_csv("".join(services.export_csv(Customer.objects.none())).encode()) == [HEADERS]
    assert json.loads("".join(services.export_json(Customer.objects.none()))) == []


def test_export_customers_command_to_file_and_stdout(synced, tmp_path):
    target = tmp_path / "customers.csv"
    call_command("export_customers", "--format", "csv", "--output", str(target), stderr=io.StringIO())
    rows = parse_csv(target.read_bytes())
    assert rows[0] == HEADERS and len(rows) == 240
    out = io.StringIO()
    call_command("export_customers", "--format", "json", stdout=out)
    assert len(json.loads(out.getvalue())) == 239
    out = io.StringIO()
    call_command("export_customers", "--format", "json", "--category", "经销商", stdout=out)
    assert [obj["sortname"] for obj in json.loads(out.getvalue())] == ["经销商", "经销商"]


@pytest.fixture
def manager(db):
    user = User.objects.create_user("manager", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="export_customer"), Permission.objects.get(codename="view_customer")
    )
    return user


def test_rest_export_streams_csv_and_json_to_managers(synced, client, manager, django_assert_max_num_queries):
    client.force_login(manager)
    with django_assert_max_num_queries(6):
        response = client.get("/api/v1/customers/export?format=csv")
        assert response.status_code == 200 and response.streaming
        body = b"".join(response.streaming_content)
    assert response["Content-Type"].startswith("text/csv")
    assert 'attachment; filename="customers-' in response["Content-Disposition"]
    rows = parse_csv(body)
    assert rows[0] == HEADERS and len(rows) == 240
    response = client.get("/api/v1/customers/export?format=json")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    assert len(json.loads(b"".join(response.streaming_content))) == 239


def test_rest_export_refuses_anonymous_non_staff_and_staff_without_permission(synced, client):
    assert client.get("/api/v1/customers/export?format=csv").status_code == 403
    client.force_login(User.objects.create_user("clerk", password="pw"))
    assert client.get("/api/v1/customers/export?format=csv").status_code == 403
    client.force_login(User.objects.create_user("supervisor", password="pw", is_staff=True))
    response = client.get("/api/v1/customers/export?format=csv")
    assert response.status_code == 403 and "导出" in response.json()["detail"]


def test_rest_export_rejects_an_unknown_format(client, manager):
    client.force_login(manager)
    response = client.get("/api/v1/customers/export?format=xlsx")
    assert response.status_code == 400
    assert response.json() == {"detail": {"format": ["format 只能是 csv 或 json"]}, "code": "invalid"}


def test_admin_action_exports_the_filtered_list(synced, admin_client):
    # "Select all N matching" on the list filtered to dealers, then the CSV action.
    response = admin_client.post(
        "/admin/customers/customer/?category__exact=经销商",
        {"action": "export_csv", "select_across": "1", "index": "0", "_selected_action": ["1"]},
    )
    assert response.status_code == 200
    rows = parse_csv(b"".join(response.streaming_content))
    assert [row[3] for row in rows[1:]] == ["经销商", "经销商"]
    response = admin_client.post(
        "/admin/customers/customer/",
        {"action": "export_json", "select_across": "1", "index": "0", "_selected_action": ["1"]},
    )
    assert len(json.loads(b"".join(response.streaming_content))) == 239


def test_export_action_hidden_without_the_permission(synced, client):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_customer"))
    client.force_login(user)
    response = client.get("/admin/customers/customer/")
    assert response.status_code == 200
    assert b"export_csv" not in response.content


@pytest.mark.e2e
def test_export_streams_through_a_real_daphne_without_buffering(live_env, tmp_path, simulator):
    import httpx

    from apps.core.testing import running, start_daphne
    from apps.customers.models import Contact
    from apps.erp.client import ErpClient, ErpCredentials

    with ErpClient(ErpCredentials(simulator.url, "demo", "demo-erp"), backoff=0.01) as client:
        erp_services.sync_erp(client=client)
    assert Contact.objects.exists()
    manager = User.objects.create_user("manager", password="pw", is_staff=True)
    manager.user_permissions.add(Permission.objects.get(codename="export_customer"))
    from django.test import Client

    web = Client()
    web.force_login(manager)
    session = web.cookies["sessionid"].value
    daphne, base_url = start_daphne(live_env, tmp_path)
    with running(daphne):
        chunks = []
        with httpx.stream(
            "GET", f"{base_url}/api/v1/customers/export?format=csv", cookies={"sessionid": session}, timeout=30
        ) as response:
            assert response.status_code == 200
            assert response.headers.get("transfer-encoding") == "chunked" or "content-length" not in response.headers
            chunks = list(response.iter_bytes())
        rows = parse_csv(b"".join(chunks))
        assert rows[0] == HEADERS and len(rows) == 240
        assert httpx.get(f"{base_url}/api/v1/customers/export?format=csv", timeout=10).status_code == 403


def test_asgi_export_is_an_async_stream_not_a_buffered_list(synced, manager):
    import warnings

    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    async def download() -> tuple[bool, bytes]:
        client = AsyncClient()
        await client.aforce_login(manager)
        response = await client.get("/api/v1/customers/export?format=csv")
        body = b"".join([chunk async for chunk in response.streaming_content])
        return response.is_async, body

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        is_async, body = async_to_sync(download)()
    assert is_async and not [w for w in caught if "must consume" in str(w.message)]
    assert len(parse_csv(body)) == 240
