from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.core.sqlite_to_postgres import MigrationRefused, SqliteToPostgres, default_source

EXIT_VERIFY_FAILED = 1
EXIT_REFUSED = 2
EXIT_COPY_FAILED = 3


class Command(BaseCommand):
    help = (
        "Copy every table from the embedded SQLite database into the PostgreSQL of DATABASE_URL: "
        "schema by migrations, data in dependency order with COPY, sequences reset, then verified."
    )

    def add_arguments(self, parser):
        parser.add_argument("--source", default=None, help="SQLite file (default: var/wxcs.sqlite3)")
        parser.add_argument("--dry-run", action="store_true", help="show the plan and row counts; write nothing")
        parser.add_argument("--truncate", action="store_true", help="replace data already in the target")
        parser.add_argument("--batch-rows", type=int, default=5000)
        parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")

    def handle(self, *args, source=None, dry_run=False, truncate=False, batch_rows=5000, no_progress=False, **options):
        try:
            migration = SqliteToPostgres(source or default_source(), batch_rows=batch_rows)
        except MigrationRefused as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from exc
        try:
            self._run(migration, dry_run, truncate, no_progress)
        finally:
            migration.close()

    def _run(self, migration, dry_run, truncate, no_progress):
        try:
            migration.check_source_schema()
            plans = migration.plan()
        except MigrationRefused as exc:
            raise CommandError(str(exc), returncode=EXIT_REFUSED) from exc
        total = sum(p.source_rows for p in plans)
        self.stdout.write(
            self.style.MIGRATE_HEADING(f"Plan: {len(plans)} tables, {total} rows from {migration.source_path}")
        )
        for number, plan in enumerate(plans, start=1):
            self.stdout.write(f"  {number:3d}. {plan.table:<45} {plan.source_rows:>10}")
        occupied = migration.target_data_tables(plans)
        if occupied and not truncate:
            listed = ", ".join(f"{table} ({count})" for table, count in occupied[:8])
            raise CommandError(
                f"the target already holds data: {listed}. Re-run with --truncate to replace it.",
                returncode=EXIT_REFUSED,
            )
        if dry_run:
            verdict = "would replace existing data" if occupied else "target is empty"
            self.stdout.write(self.style.SUCCESS(f"Dry run: nothing written ({verdict})."))
            return
        self.stdout.write("Applying migrations on the target…")
        migration.migrate_target_schema(self.stdout)
        try:
            report = migration.copy(plans, self._progress_factory(no_progress))
        except Exception as exc:
            raise CommandError(
                f"copy failed and was rolled back, the target holds no partial data; fix the cause and re-run: {exc}",
                returncode=EXIT_COPY_FAILED,
            ) from exc
        self.stdout.write("Verifying row counts and checksums…")
        migration.verify(plans, report)
        self._summary(report)
        if report.failed:
            names = ", ".join(f"{t.table} ({t.detail})" for t in report.failed)
            raise CommandError(f"verification failed: {names}", returncode=EXIT_VERIFY_FAILED)

    def _progress_factory(self, disabled):
        @contextmanager
        def progress(plan):
            with tqdm(
                total=plan.source_rows,
                desc=plan.table,
                unit="row",
                unit_scale=True,
                leave=False,
                disable=disabled,
                file=self.stderr._out,
            ) as bar:
                yield bar

        return progress

    def _summary(self, report):
        rate = report.rows / report.copy_seconds if report.copy_seconds else 0
        self.stdout.write(self.style.MIGRATE_HEADING("Summary"))
        for table in report.tables:
            mark = self.style.SUCCESS("ok") if table.verified else self.style.ERROR("MISMATCH")
            self.stdout.write(
                f"  {table.table:<45} {table.rows:>10} rows  {table.seconds:7.2f}s  {mark} {table.detail}"
            )
        self.stdout.write(
            f"{len(report.tables)} tables, {report.rows} rows copied in {report.copy_seconds:.2f}s "
            f"({rate:,.0f} rows/s), verified in {report.verify_seconds:.2f}s"
        )
        if not report.failed:
            self.stdout.write(self.style.SUCCESS("Migration complete: every table verified."))
