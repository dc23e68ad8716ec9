from django.core.management.base import BaseCommand

from apps.customers import services
from apps.customers.models import Customer


class Command(BaseCommand):
    help = "Export customers (all 13 ERP fields) as CSV (UTF-8 with BOM, Excel-friendly) or JSON."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=services.EXPORT_FORMATS, default="csv")
        parser.add_argument("--output", help="file to write (default: standard output)")
        parser.add_argument("--category", help="only this 客户分类, e.g. 经销商")
        parser.add_argument("--salesperson", help="only this 销售人员")

    def handle(self, *args, format="csv", output=None, category=None, salesperson=None, **options):
        queryset = Customer.objects.all()
        if category:
            queryset = queryset.filter(category=category)
        if salesperson:
            queryset = queryset.filter(salesperson=salesperson)
        chunks = services.export(queryset, format)
        if output:
            # newline="": the csv module already wrote \r\n line ends.
            with open(output, "w", encoding="utf-8", newline="") as handle:
                handle.writelines(chunks)
            self.stderr.write(f"{queryset.count()} customers → {output}")
        else:
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
