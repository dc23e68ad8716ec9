"""Fill an embedded-mode SQLite database with realistic volumes for the migration test and benchmark.

Run as `python manage.py shell -c "from apps.core.tests.fill_sqlite import fill; fill(10000)"` with
SQLITE_PATH pointing at a migrated SQLite file (DATABASE_URL unset).
"""

import datetime as dt

from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask


@transaction.atomic
def fill_platform_tables(users: int = 50) -> None:
    group = Group.objects.create(name="主管")
    group.permissions.set(Permission.objects.all()[:20])
    created = User.objects.bulk_create(
        User(username=f"user{i}", first_name=f"客服{i}", is_staff=i % 2 == 0, password="!") for i in range(users)
    )
    for user in created[:10]:
        user.groups.add(group)
    user_type = ContentType.objects.get_for_model(User)
    LogEntry.objects.bulk_create(
        LogEntry(
            user=created[i % users],
            content_type=user_type,
            object_id=str(created[i % users].pk),
            object_repr=f"用户 {i}",
            action_flag=ADDITION,
            change_message='[{"added": {}}]',
            action_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i),
        )
        for i in range(500)
    )
    every = IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="演示任务", task="celery.backend_cleanup", interval=every, kwargs='{"a": 1}')


def fill(messages: int = 10000) -> None:
    fill_platform_tables()
