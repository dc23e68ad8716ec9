from django.core.management.base import BaseCommand
from django.db import transaction

from apps.core.discovery import app_modules


class Command(BaseCommand):
    help = "Create the demo data (idempotent). Each app may ship `demo.py` with `seed(stdout)`."

    def handle(self, *args, **options):
        for module in app_modules("demo"):
            with transaction.atomic():
                module.seed(self.stdout)
        self.stdout.write(self.style.SUCCESS("demo data ready"))
