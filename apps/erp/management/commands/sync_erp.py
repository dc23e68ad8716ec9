from django.core.management.base import BaseCommand, CommandError

from apps.erp import services
from apps.erp.models import SyncRun


class Command(BaseCommand):
    help = "Pull customers, contacts and contracts from the ERP (the simulator when no ERP is configured)."

    def add_arguments(self, parser):
        parser.add_argument("--full", action="store_true", help="rewrite every row, not only those that differ")

    def handle(self, *args, full=False, **options):
        try:
            run = services.sync_erp(full=full, trigger=SyncRun.Trigger.COMMAND)
        except services.SyncAlreadyRunning as exc:
            raise CommandError(str(exc)) from exc
        for entity, counts in run.stats.items():
            if isinstance(counts, dict):
                self.stdout.write(
                    f"{entity}: created {counts['created']}, updated {counts['updated']}, "
                    f"unchanged {counts['unchanged']}, removed {counts['removed']}"
                )
        for line in run.error_log.splitlines():
            self.stderr.write(self.style.ERROR(line))
        summary = f"sync #{run.pk} {run.status} in {run.stats.get('seconds')}s"
        if run.status == SyncRun.Status.FAILED:
            raise CommandError(summary)
        self.stdout.write(self.style.SUCCESS(summary) if not run.errors else self.style.WARNING(summary))
