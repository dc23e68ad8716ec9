"""Formerly registered the alert evaluation's beat entry; every beat schedule is now declared in
celery_app.py (beat's DatabaseScheduler keeps the PeriodicTask row by name)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = []
