from prometheus_client import Counter, Histogram

ERP_REQUESTS = Counter("wxcs_erp_requests_total", "ERP calls by outcome", ["outcome"])
ERP_SYNC_RUNS = Counter("wxcs_erp_sync_runs_total", "ERP sync runs by final status", ["status"])
ERP_SYNC_SECONDS = Histogram(
    "wxcs_erp_sync_duration_seconds", "Duration of ERP sync runs", buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
)
ERP_SYNC_ROWS = Counter("wxcs_erp_sync_rows_total", "Rows written by ERP syncs", ["entity", "change"])
