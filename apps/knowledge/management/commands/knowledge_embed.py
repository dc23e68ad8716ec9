from django.core.management.base import BaseCommand

from apps.core import aio
from apps.knowledge import services


class Command(BaseCommand):
    help = "Embed knowledge entries that have no vector yet (--all: re-embed every entry, e.g. after a model change)."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true")

    def handle(self, *args, **options):
        count = aio.run(services.embed_entries(all_entries=options["all"]))
        self.stdout.write(f"embedded {count} entries")
