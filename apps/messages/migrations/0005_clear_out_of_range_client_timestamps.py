"""Client timestamps outside the window ingest now accepts (apps.core.inputs.sane_timestamp: from 2000-01-01 to a
day ahead) were stored before it existed; a year-9999 one breaks the message page in admin (it overflows when
shown in local time). They say nothing true, so they are cleared; received_at keeps the real arrival time."""

from datetime import UTC, datetime, timedelta

from django.db import migrations
from django.db.models import Q


def clear_out_of_range_client_timestamps(apps, schema_editor):
    latest = datetime.now(UTC) + timedelta(days=1)
    earliest = datetime(2000, 1, 1, tzinfo=UTC)
    Message = apps.get_model("wxmessages", "Message")
    Message.objects.filter(Q(client_timestamp__lt=earliest) | Q(client_timestamp__gt=latest)).update(
        client_timestamp=None
    )


class Migration(migrations.Migration):
    dependencies = [("wxmessages", "0004_named_permissions")]

    operations = [migrations.RunPython(clear_out_of_range_client_timestamps, migrations.RunPython.noop)]
