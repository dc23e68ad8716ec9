import os

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from honcho.manager import Manager

from apps.core.platform import all_processes, start_embedded_redis


class Command(BaseCommand):
    help = "Run the whole platform: (embedded Redis,) migrations, demo data, Daphne, Celery worker and beat."

    def add_arguments(self, parser):
        parser.add_argument("--no-seed", action="store_true", help="skip seed_demo")

    def handle(self, *args, no_seed=False, **options):
        redis_process = start_embedded_redis() if not settings.REDIS_URL else None
        try:
            call_command("migrate", interactive=False, verbosity=1)
            if not no_seed:
                call_command("seed_demo")
            manager = Manager()
            for name, command in all_processes().items():
                manager.add_process(name, command, env=dict(os.environ))
            self.stdout.write(
                self.style.SUCCESS(
                    f"wxcs on http://{settings.WEB_HOST}:{settings.WEB_PORT}/admin/ — Ctrl-C stops everything"
                )
            )
            manager.loop()
        finally:
            if redis_process is not None:
                redis_process.terminate()
                redis_process.wait(timeout=10)
        raise SystemExit(manager.returncode or 0)
