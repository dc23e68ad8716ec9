"""A client for the 智邦国际 ERP protocol (httpx, synchronous: it runs in Celery tasks and commands).

- Login `POST /webapi/v3/ov1/login` with `datas` user / password / serialnum; the token is
  `header.session`. It is kept in the cache (Redis) for ERP_SESSION_TTL, so every process and every
  call reuses one session instead of logging in each time.
- Every call `POST {session, cmdkey, datas: [{id, val}]}`; `header.status` 0 = ok, 400 = session
  invalid (log in again and retry once), 300 = business error (raised as ErpBusinessError).
- Network errors and HTTP 5xx are retried with exponential backoff and jitter, then ErpUnavailable.
- Lists come back as `body.source.table` {cols, rows, page}; `iter_rows` walks every page.
"""

import hashlib
import logging
import random
import secrets
import string
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from django.conf import settings
from django.core.cache import cache

from apps.erp import metrics

logger = logging.getLogger(__name__)

LOGIN_PATH = "/webapi/v3/ov1/login"
CUSTOMER_LIST = "/sysa/mobilephone/custom/list.asp"
CUSTOMER_DETAIL = "/sysa/mobilephone/custom/add.asp?edit=1"
CONTACT_LIST = "/sysa/mobilephone/salesmanage/person/list.asp"
CONTRACT_LIST = "/sysa/mobilephone/contract/billlist.asp"
CONTRACT_DETAIL = "/webapi/v3/sales/contract/detail"

STATUS_OK, STATUS_BUSINESS_ERROR, STATUS_SESSION_INVALID = 0, 300, 400


class ErpError(Exception):
    """Any failure talking to the ERP; `code` is the ERP's header.status when it answered."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class ErpBusinessError(ErpError):
    """The ERP refused the request (code 300): wrong credentials, locked data, unknown record…"""


class ErpSessionInvalid(ErpError):
    """Code 400 even after logging in again."""


class ErpUnavailable(ErpError):
    """Network error, timeout or HTTP 5xx after every retry: transient, worth retrying later."""


class ErpProtocolError(ErpError):
    """The answer is not the ERP's JSON envelope."""


@dataclass(frozen=True)
class ErpCredentials:
    base_url: str
    username: str
    password: str = ""

    def __repr__(self) -> str:  # never show the password
        return f"ErpCredentials(base_url={self.base_url!r}, username={self.username!r})"


def simulator_url() -> str:
    return f"http://127.0.0.1:{settings.ERP_SIMULATOR_PORT}"


def current_credentials() -> ErpCredentials:
    """The active ErpConnection row, else ERP_* settings, else the bundled simulator."""
    from apps.erp.models import ErpConnection

    row = ErpConnection.objects.filter(active=True).order_by("-updated_at").first()
    if row is not None:
        return ErpCredentials(row.base_url.rstrip("/"), row.username, row.password or "")
    if settings.ERP_BASE_URL:
        return ErpCredentials(settings.ERP_BASE_URL.rstrip("/"), settings.ERP_USERNAME, settings.ERP_PASSWORD)
    from apps.erp.simulator import SIM_PASSWORD, SIM_USERNAME

    return ErpCredentials(simulator_url(), SIM_USERNAME, SIM_PASSWORD)


def _serialnum() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


class ErpClient:
    def __init__(
        self,
        credentials: ErpCredentials,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        page_size: int | None = None,
        session_ttl: int | None = None,
    ):
        self.credentials = credentials
        self.timeout = settings.ERP_TIMEOUT if timeout is None else timeout
        self.retries = settings.ERP_RETRIES if retries is None else retries
        self.backoff = settings.ERP_RETRY_BACKOFF if backoff is None else backoff
        self.page_size = page_size or settings.ERP_PAGE_SIZE
        self.session_ttl = session_ttl or settings.ERP_SESSION_TTL
        digest = hashlib.sha256(f"{credentials.base_url}|{credentials.username}".encode()).hexdigest()[:16]
        self._cache_key = f"erp:session:{digest}"
        self._http = httpx.Client(base_url=credentials.base_url, timeout=self.timeout)
        self._login_lock = threading.Lock()
        self.logins = 0

    @classmethod
    def from_settings(cls, **options) -> "ErpClient":
        return cls(current_credentials(), **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ErpClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------------
    def _post(self, path: str, payload: dict) -> dict:
        """POST with retries on network errors / 5xx; returns the decoded envelope."""
        attempt = 0
        while True:
            try:
                response = self._http.post(path, json=payload)
                if response.status_code >= 500:
                    raise httpx.HTTPStatusError(
                        f"HTTP {response.status_code}", request=response.request, response=response
                    )
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                metrics.ERP_REQUESTS.labels(outcome="network_error").inc()
                if attempt >= self.retries:
                    raise ErpUnavailable(f"ERP {path} unreachable after {attempt + 1} attempts: {exc}") from exc
                delay = self.backoff * (2**attempt) * random.uniform(0.5, 1.5)
                logger.warning("ERP %s failed (%s); retry %d in %.2fs", path, exc, attempt + 1, delay)
                time.sleep(delay)
                attempt += 1
                continue
            if response.status_code != 200:
                raise ErpProtocolError(f"ERP {path} answered HTTP {response.status_code}")
            try:
                envelope = response.json()
                header = envelope["header"]
                int(header["status"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ErpProtocolError(f"ERP {path} answered something that is not its JSON envelope") from exc
            return envelope

    # --- session ------------------------------------------------------------------------------
    def login(self) -> str:
        payload = {
            "datas": [
                {"id": "user", "val": f"txt:{self.credentials.username}"},
                {"id": "password", "val": f"txt:{self.credentials.password}"},
                {"id": "serialnum", "val": _serialnum()},
            ]
        }
        header = self._post(LOGIN_PATH, payload)["header"]
        status = int(header["status"])
        if status != STATUS_OK or not header.get("session"):
            metrics.ERP_REQUESTS.labels(outcome="login_failed").inc()
            raise ErpBusinessError(f"ERP 登录失败：{header.get('message') or status}", code=status)
        token = str(header["session"])
        cache.set(self._cache_key, token, timeout=self.session_ttl)
        self.logins += 1
        metrics.ERP_REQUESTS.labels(outcome="login").inc()
        logger.info("ERP login as %s on %s", self.credentials.username, self.credentials.base_url)
        return token

    def session(self) -> str:
        """The cached session token, logging in when there is none."""
        return cache.get(self._cache_key) or self.login()

    def _renew_session(self, stale: str) -> str:
        """A fresh token after `stale` was refused; threads sharing this client log in only once."""
        with self._login_lock:
            current = cache.get(self._cache_key)
            if current and current != stale:
                return current
            return self.login()

    # --- calls --------------------------------------------------------------------------------
    def call(self, path: str, datas: dict | None = None, cmdkey: str = "refresh") -> dict:
        """One ERP call; returns `body`. Re-logs in once on code 400; raises ErpBusinessError on 300."""
        items = [{"id": key, "val": value} for key, value in (datas or {}).items()]
        token = self.session()
        for attempt in range(2):
            envelope = self._post(path, {"session": token, "cmdkey": cmdkey, "datas": items})
            header = envelope["header"]
            status = int(header["status"])
            message = str(header.get("message") or "")
            if status == STATUS_OK:
                metrics.ERP_REQUESTS.labels(outcome="ok").inc()
                body = envelope.get("body")
                return body if isinstance(body, dict) else {}
            if status == STATUS_SESSION_INVALID:
                metrics.ERP_REQUESTS.labels(outcome="session_invalid").inc()
                if attempt == 0:
                    logger.info("ERP session invalid on %s; logging in again", path)
                    token = self._renew_session(token)
                    continue
                cache.delete(self._cache_key)
                raise ErpSessionInvalid(f"ERP 会话无效：{message}", code=status)
            metrics.ERP_REQUESTS.labels(outcome="business_error").inc()
            raise ErpBusinessError(f"ERP 业务错误（{status}）：{message or '未知错误'}", code=status)
        raise AssertionError("unreachable")

    def iter_rows(self, path: str, filters: dict | None = None, page_size: int | None = None) -> Iterator[dict]:
        """Every row of a paged list as {column id: value}."""
        size = page_size or self.page_size
        page = 1
        while True:
            body = self.call(path, {**(filters or {}), "pageindex": page, "pagesize": size})
            try:
                table = body["source"]["table"]
                columns = [column["id"] if isinstance(column, dict) else column for column in table["cols"]]
                rows = table.get("rows") or []
            except (KeyError, TypeError) as exc:
                raise ErpProtocolError(f"ERP {path}: no body.source.table in the answer") from exc
            for row in rows:
                yield dict(zip(columns, row, strict=False))
            page_count = int((table.get("page") or {}).get("pagecount") or 0)
            if not rows or page >= page_count:
                return
            page += 1

    # --- the ERP's resources ------------------------------------------------------------------
    def customers(self, **filters) -> Iterator[dict]:
        return self.iter_rows(CUSTOMER_LIST, filters)

    def customer(self, erp_id: int) -> dict | None:
        rows = list(self.iter_rows(CUSTOMER_LIST, {"telord": erp_id}, page_size=1))
        return rows[0] if rows else None

    def customer_detail(self, erp_id: int) -> dict:
        return self.call(CUSTOMER_DETAIL, {"ord": erp_id}).get("customer") or {}

    def contacts(self, **filters) -> Iterator[dict]:
        return self.iter_rows(CONTACT_LIST, filters)

    def contracts(self, **filters) -> Iterator[dict]:
        return self.iter_rows(CONTRACT_LIST, filters)

    def contract_detail(self, contract_id: int) -> dict:
        return self.call(CONTRACT_DETAIL, {"ord": contract_id}).get("contract") or {}
