"""An ERP simulator speaking the 智邦国际 ERP protocol over the synthetic data set (apps.erp.simdata).

    python -m apps.erp.simulator --port 8769 [--customers 239] [--session-ttl 7200]

Plain aiohttp, never imports Django. Used by `make run` (a platform process), the demo seed and the
tests (`SimulatorThread` runs it on a free port in a background thread).

Besides the ERP paths it has control endpoints for tests (`/_sim/...`, JSON bodies):
  POST /_sim/fault   {"path": "custom/list.asp", "code": 400|300|500, "after": 0, "times": 1,
                      "message": "...", "latency_ms": 0}
       the next `times` matching calls (after skipping `after`) fail: 400 really drops the caller's
       session ("session invalid"), 300 is a business error, 500 an HTTP 500; or they are slowed down
  POST /_sim/latency {"ms": 50}                        every call waits this long
  POST /_sim/rename  {"ord": 3001, "name": "...", "field": "name"}   change a customer field
  POST /_sim/delete  {"ord": 3001}                    the customer (and its contacts, contracts) is gone
  POST /_sim/expire                                   drop every session
  POST /_sim/reset                                    faults, latency, renames, deletions, sessions, counters
  GET  /_sim/stats                                    {"logins": n, "calls": {path: n}, "sessions": n}
"""

import argparse
import asyncio
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass

from aiohttp import web

from apps.erp import simdata

SIM_USERNAME = "demo"
SIM_PASSWORD = "demo-erp"  # noqa: S105 - the simulator's public demo login
DEFAULT_PORT = 8769

LOGIN_PATH = "/webapi/v3/ov1/login"
CUSTOMER_LIST = "/sysa/mobilephone/custom/list.asp"
CUSTOMER_DETAIL = "/sysa/mobilephone/custom/add.asp"
CONTACT_LIST = "/sysa/mobilephone/salesmanage/person/list.asp"
CONTRACT_LIST = "/sysa/mobilephone/contract/billlist.asp"
CONTRACT_DETAIL = "/webapi/v3/sales/contract/detail"

COLUMN_TITLES = {
    "ord": "编号",
    "name": "名称",
    "catename": "销售人员",
    "sortname": "客户分类",
    "sort1name": "客户状态",
    "personname": "联系人",
    "personjob": "职务",
    "phone": "电话",
    "mobile": "手机",
    "telintro": "最新跟进",
    "person": "联系人编号",
    "url": "链接",
    "personurl": "联系人链接",
}


@dataclass
class Fault:
    path: str
    code: int
    after: int = 0
    times: int = 1
    message: str = ""
    latency_ms: int = 0


class SimulatorState:
    """The ERP's data and its behaviour switches (one instance per server)."""

    def __init__(
        self,
        customers: int = simdata.DEFAULT_COUNT,
        seed: int = simdata.DEFAULT_SEED,
        username: str = SIM_USERNAME,
        password: str = SIM_PASSWORD,
        session_ttl: float = 7200,
        latency_ms: int = 0,
        max_page_size: int = 1000,
    ):
        self.count, self.seed = customers, seed
        self.username, self.password = username, password
        self.session_ttl, self.latency_ms, self.max_page_size = session_ttl, latency_ms, max_page_size
        self.lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        self.customers = simdata.generate(self.count, self.seed)
        self.by_ord = {customer.ord: customer for customer in self.customers}
        self.contacts = [contact for customer in self.customers for contact in customer.contacts]
        self.contracts = [contract for customer in self.customers for contract in customer.contracts]
        self.contract_by_ord = {contract.ord: contract for contract in self.contracts}
        self.overrides: dict[int, dict] = {}
        self.deleted: set[int] = set()
        self._filtered: dict[tuple, list] = {}
        self._rows: dict[int, dict] = {}
        self._row_json: dict[tuple, str] = {}
        self.sessions: dict[str, float] = {}
        self.faults: list[Fault] = []
        self.stats: Counter = Counter()
        self.logins = 0

    def reset(self) -> None:
        with self.lock:
            self.latency_ms = 0
            self.faults.clear()
            self.overrides.clear()
            self.deleted.clear()
            self.changed()
            self.sessions.clear()
            self.stats.clear()
            self.logins = 0

    def customer_row(self, customer: simdata.SimCustomer) -> dict:
        row = self._rows.get(customer.ord)
        if row is None:
            row = self._rows[customer.ord] = {**customer.row(), **self.overrides.get(customer.ord, {})}
        return row

    def company_name(self, ord_: int) -> str:
        return self.customer_row(self.by_ord[ord_])["name"]

    def contact_row(self, contact: simdata.SimContact) -> dict:
        return {**vars(contact), "companyname": self.company_name(contact.company)}

    def contract_row(self, contract: simdata.SimContract) -> dict:
        row = {**vars(contract), "money": str(contract.money), "date1": str(contract.date1)}
        row["companyname"] = self.company_name(contract.company)
        return row

    def warm(self) -> None:
        """Serialise every list row now rather than on first request (benchmarks time the client)."""
        for kind, items, columns, to_row in (
            ("customer", self.customers, simdata.CUSTOMER_COLUMNS, self.customer_row),
            ("contact", self.contacts, simdata.CONTACT_COLUMNS, self.contact_row),
            ("contract", self.contracts, simdata.CONTRACT_COLUMNS, self.contract_row),
        ):
            for item in items:
                self.row_json(kind, item, columns, to_row)

    def changed(self) -> None:
        self._filtered.clear()
        self._rows.clear()
        self._row_json.clear()

    def row_json(self, kind: str, item, columns, to_row) -> str:
        key = (kind, item.ord)
        text = self._row_json.get(key)
        if text is None:
            row = to_row(item)
            text = self._row_json[key] = _dumps([row[column] for column in columns])
        return text

    def filtered(self, key: tuple, items: list, predicate) -> list:
        """`items` matching `predicate` and not deleted, cached until the data changes (paging re-asks often)."""
        if key not in self._filtered:
            self._filtered[key] = [item for item in items if predicate(item)]
        return self._filtered[key]

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path in path:
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None


def envelope(status: int = 0, message: str = "", session: str = "", body: dict | None = None) -> web.Response:
    payload = {"header": {"status": status, "message": message, "session": session}, "body": body or {}}
    return web.json_response(payload, dumps=_dumps)


def datas_dict(payload: dict) -> dict:
    """`datas: [{id, val}]` → {id: val}, with the `txt:` type prefix removed."""
    values = {}
    for item in payload.get("datas") or []:
        if isinstance(item, dict) and "id" in item:
            value = item.get("val", "")
            if isinstance(value, str) and value.startswith("txt:"):
                value = value[4:]
            values[str(item["id"])] = value
    return values


def _dumps(data) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


def table_response(kind: str, columns, items: list, to_row, datas: dict, state: "SimulatorState") -> web.Response:
    """One page of `items` as the ERP's `body.source.table` envelope.

    Each row is serialised once and kept (until the data changes), and the page is joined from those
    strings: the simulator stays cheap next to the client it is measuring.
    """
    try:
        page_size = max(1, min(int(datas.get("pagesize") or 20), state.max_page_size))
        page_index = max(1, int(datas.get("pageindex") or 1))
    except (TypeError, ValueError):
        page_size, page_index = 20, 1
    start = (page_index - 1) * page_size
    rows = ",".join(state.row_json(kind, item, columns, to_row) for item in items[start : start + page_size])
    cols = _dumps([{"id": column, "title": COLUMN_TITLES.get(column, column)} for column in columns])
    page = _dumps(
        {
            "pageindex": page_index,
            "pagesize": page_size,
            "recordcount": len(items),
            "pagecount": (len(items) + page_size - 1) // page_size,
        }
    )
    header = _dumps({"status": 0, "message": "", "session": ""})
    text = f'{{"header":{header},"body":{{"source":{{"table":{{"cols":{cols},"rows":[{rows}],"page":{page}}}}}}}}}'
    return web.Response(text=text, content_type="application/json")


class Simulator:
    def __init__(self, state: SimulatorState):
        self.state = state

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**2)
        app.router.add_post(LOGIN_PATH, self.login)
        for path, handler in (
            (CUSTOMER_LIST, self.customer_list),
            (CUSTOMER_DETAIL, self.customer_detail),
            (CONTACT_LIST, self.contact_list),
            (CONTRACT_LIST, self.contract_list),
            (CONTRACT_DETAIL, self.contract_detail),
        ):
            app.router.add_post(path, self._authenticated(path, handler))
        app.router.add_post("/_sim/fault", self.add_fault)
        app.router.add_post("/_sim/latency", self.set_latency)
        app.router.add_post("/_sim/rename", self.rename)
        app.router.add_post("/_sim/delete", self.delete)
        app.router.add_post("/_sim/expire", self.expire)
        app.router.add_post("/_sim/reset", self.reset)
        app.router.add_get("/_sim/stats", self.stats)
        return app

    async def _payload(self, request: web.Request) -> dict:
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return payload if isinstance(payload, dict) else {}

    async def login(self, request: web.Request) -> web.Response:
        state = self.state
        if state.latency_ms:
            await asyncio.sleep(state.latency_ms / 1000)
        fault = state.take_fault(LOGIN_PATH)
        if fault is not None and fault.code == 500:
            return web.Response(status=500, text="Internal Server Error")
        datas = datas_dict(await self._payload(request))
        serial = str(datas.get("serialnum", ""))
        if not serial or len(serial) > 20 or not serial.isalnum():
            return envelope(300, "serialnum 无效")
        if datas.get("user") != state.username or datas.get("password") != state.password:
            return envelope(300, "用户名或密码错误")
        token = secrets.token_hex(16)
        with state.lock:
            state.sessions[token] = time.monotonic() + state.session_ttl
            state.logins += 1
        return envelope(0, "登录成功", session=token)

    def _authenticated(self, path, handler):
        async def view(request: web.Request) -> web.Response:
            state = self.state
            state.stats[path] += 1
            fault = state.take_fault(request.path_qs)
            latency = state.latency_ms + (fault.latency_ms if fault else 0)
            if latency:
                await asyncio.sleep(latency / 1000)
            payload = await self._payload(request)
            token = str(payload.get("session") or "")
            expires = state.sessions.get(token)
            if expires is None or expires < time.monotonic():
                state.sessions.pop(token, None)
                return envelope(400, "会话已失效，请重新登录")
            if fault is not None and fault.code == 400:
                state.sessions.pop(token, None)
                return envelope(400, fault.message or "会话已失效，请重新登录")
            if fault is not None and fault.code == 300:
                return envelope(300, fault.message or "业务处理失败：数据被锁定")
            if fault is not None and fault.code == 500:
                return web.Response(status=500, text="Internal Server Error")
            return handler(request, datas_dict(payload))

        return view

    def customer_list(self, request, datas: dict) -> web.Response:
        state = self.state
        telord, ly, jz, name = (str(datas.get(key) or "") for key in ("telord", "ly", "jz", "name"))

        def wanted(customer) -> bool:
            return (
                customer.ord not in state.deleted
                and (not telord or str(customer.ord) == telord)
                and (not ly or customer.ly == ly)
                and (not jz or customer.jz == jz)
                and (not name or name in state.customer_row(customer)["name"])
            )

        customers = state.filtered(("customers", telord, ly, jz, name), state.customers, wanted)
        return table_response("customer", simdata.CUSTOMER_COLUMNS, customers, state.customer_row, datas, state)

    def customer_detail(self, request, datas: dict) -> web.Response:
        customer = self.state.by_ord.get(_int(datas.get("ord")))
        if customer is None or customer.ord in self.state.deleted:
            return envelope(300, "客户不存在")
        detail = dict(self.state.customer_row(customer))
        detail.update(
            ly=customer.ly, lyname=simdata.SOURCES[customer.ly], jz=customer.jz, jzname=simdata.VALUES[customer.jz]
        )
        return envelope(body={"customer": detail})

    def _owned(self, kind: str, items: list, datas: dict) -> list:
        company = _int(datas.get("company"))
        return self.state.filtered(
            (kind, company),
            items,
            lambda item: item.company not in self.state.deleted and (company is None or item.company == company),
        )

    def contact_list(self, request, datas: dict) -> web.Response:
        contacts = self._owned("contacts", self.state.contacts, datas)
        return table_response("contact", simdata.CONTACT_COLUMNS, contacts, self.state.contact_row, datas, self.state)

    def contract_list(self, request, datas: dict) -> web.Response:
        contracts = self._owned("contracts", self.state.contracts, datas)
        return table_response(
            "contract", simdata.CONTRACT_COLUMNS, contracts, self.state.contract_row, datas, self.state
        )

    def contract_detail(self, request, datas: dict) -> web.Response:
        contract = self.state.contract_by_ord.get(_int(datas.get("ord")))
        if contract is None or contract.company in self.state.deleted:
            return envelope(300, "合同不存在")
        detail = {**vars(contract), "money": str(contract.money), "date1": str(contract.date1)}
        detail["companyname"] = self.state.company_name(contract.company)
        return envelope(body={"contract": detail})

    # --- control endpoints (tests, demos) ---------------------------------------------------
    async def add_fault(self, request: web.Request) -> web.Response:
        body = await self._payload(request)
        try:
            fault = Fault(
                path=str(body.get("path", "")),
                code=int(body.get("code", 0)),
                after=int(body.get("after", 0)),
                times=int(body.get("times", 1)),
                message=str(body.get("message", "")),
                latency_ms=int(body.get("latency_ms", 0)),
            )
        except (TypeError, ValueError):
            return web.json_response({"error": "bad fault"}, status=400)
        with self.state.lock:
            self.state.faults.append(fault)
        return web.json_response({"ok": True})

    async def set_latency(self, request: web.Request) -> web.Response:
        body = await self._payload(request)
        self.state.latency_ms = int(body.get("ms", 0))
        return web.json_response({"ok": True})

    async def rename(self, request: web.Request) -> web.Response:
        body = await self._payload(request)
        ord_, field = _int(body.get("ord")), str(body.get("field", "name"))
        if ord_ not in self.state.by_ord or field not in simdata.CUSTOMER_COLUMNS or field == "ord":
            return web.json_response({"error": "unknown customer or field"}, status=400)
        with self.state.lock:
            self.state.overrides.setdefault(ord_, {})[field] = str(body.get("name", ""))
            self.state.changed()
        return web.json_response({"ok": True})

    async def delete(self, request: web.Request) -> web.Response:
        body = await self._payload(request)
        ord_ = _int(body.get("ord"))
        if ord_ not in self.state.by_ord:
            return web.json_response({"error": "unknown customer"}, status=400)
        with self.state.lock:
            self.state.deleted.add(ord_)
            self.state.changed()
        return web.json_response({"ok": True})

    async def expire(self, request: web.Request) -> web.Response:
        with self.state.lock:
            self.state.sessions.clear()
        return web.json_response({"ok": True})

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"logins": self.state.logins, "calls": dict(self.state.stats), "sessions": len(self.state.sessions)}
        )


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class SimulatorThread:
    """The simulator on its own event loop in a daemon thread; `with SimulatorThread() as sim: sim.url`."""

    def __init__(self, state: SimulatorState | None = None, host: str = "127.0.0.1", port: int = 0):
        self.state = state or SimulatorState()
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="erp-simulator", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "SimulatorThread":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(Simulator(self.state).app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> "SimulatorThread":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="智邦 ERP simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--customers", type=int, default=simdata.DEFAULT_COUNT)
    parser.add_argument("--seed", type=int, default=simdata.DEFAULT_SEED)
    parser.add_argument("--username", default=SIM_USERNAME)
    parser.add_argument("--password", default=SIM_PASSWORD)
    parser.add_argument("--session-ttl", type=float, default=7200, help="seconds a session lasts")
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every call")
    parser.add_argument("--max-page-size", type=int, default=1000)
    args = parser.parse_args(argv)
    started = time.monotonic()
    state = SimulatorState(
        customers=args.customers,
        seed=args.seed,
        username=args.username,
        password=args.password,
        session_ttl=args.session_ttl,
        latency_ms=args.latency_ms,
        max_page_size=args.max_page_size,
    )
    state.warm()
    print(
        f"ERP simulator: {len(state.customers)} customers, {len(state.contacts)} contacts, "
        f"{len(state.contracts)} contracts ({time.monotonic() - started:.1f}s) on http://{args.host}:{args.port}",
        flush=True,
    )
    web.run_app(Simulator(state).app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
