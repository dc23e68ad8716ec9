from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.core.envspec import OPTIONAL, RECOMMENDED, REQUIRED, blocking_findings, inspect_environment


class Command(BaseCommand):
    help = "Check the environment variables production needs (values shown masked)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--production",
            action="store_true",
            help="treat this as production even when DATABASE_URL/REDIS_URL are unset",
        )

    def handle(self, *args, production=False, **options):
        production = production or not settings.EMBEDDED
        findings = inspect_environment()
        blocking = {f.name for f in blocking_findings(findings)}
        for group in (REQUIRED, RECOMMENDED, OPTIONAL):
            self.stdout.write(self.style.MIGRATE_HEADING(f"[{group}]"))
            for finding in (f for f in findings if f.group == group):
                if finding.problem:
                    mark, text = self.style.ERROR("✗"), f"{finding.shown} — {finding.problem}"
                elif finding.present:
                    mark, text = self.style.SUCCESS("✓"), finding.shown
                elif finding.name in blocking:
                    mark, text = self.style.ERROR("✗"), "missing"
                else:
                    mark, text = self.style.WARNING("·"), "not set"
                self.stdout.write(f"  {mark} {finding.name}: {text}")
        mode = "production" if production else "embedded default"
        if blocking and production:
            raise CommandError(f"{mode}: {len(blocking)} problem(s): {', '.join(sorted(blocking))}", returncode=1)
        if blocking:
            self.stdout.write(self.style.WARNING(f"{mode}: would fail in production: {', '.join(sorted(blocking))}"))
        else:
            self.stdout.write(self.style.SUCCESS(f"{mode}: environment OK"))
