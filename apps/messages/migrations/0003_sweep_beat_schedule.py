"""Celery beat re-enqueues stuck messages every 30 seconds (apps.messages.services.sweep_stuck)."""

from django.db import migrations

TASK_NAME = "apps.messages.tasks.sweep_stuck"


def register(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_30s, _ = IntervalSchedule.objects.get_or_create(every=30, period="seconds")
    PeriodicTask.objects.update_or_create(
        name="消息：重新投递卡住的消息",
        defaults={"task": TASK_NAME, "interval": every_30s, "enabled": True, "queue": "default"},
    )


def unregister(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(task=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("wxmessages", "0002_conversation_engine_override"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(register, unregister)]
