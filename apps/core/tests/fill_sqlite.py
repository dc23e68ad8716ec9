"""Fill an embedded-mode SQLite database with factory-made data for the migration test and benchmark.

Run as `python manage.py shell -c "from apps.core.tests.fill_sqlite import fill; fill(10000)"` with
SQLITE_PATH pointing at a migrated SQLite file (DATABASE_URL unset). Rows are built by factory_boy
and written with bulk_create (no save() or signals: the embedded Redis is not running here).
"""

import datetime as dt
import struct
from decimal import Decimal

import factory
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from apps.agents.models import Agent
from apps.costs.models import UsageRecord
from apps.customers.models import Contact, Customer
from apps.erp.models import Contract
from apps.knowledge.models import Entry
from apps.llm_gateway.models import Provider
from apps.messages.models import Conversation, Message, Reply
from apps.rules.models import Rule

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent

    id = factory.Sequence(lambda n: f"agent-{n:03d}")
    name = factory.Sequence(lambda n: f"前台电脑 {n}")
    secret_hash = "!"
    last_heartbeat = factory.LazyFunction(lambda: {"queue_size": 3, "wx_online": True, "cpu": 1.5})


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    erp_id = factory.Sequence(lambda n: 10000 + n)
    name = factory.Sequence(lambda n: f"重庆充电科技有限公司{n}")
    salesperson = factory.Iterator(["张伟", "李娜", "王强"])
    category = factory.Iterator(["终端客户"] * 9 + ["经销商"])
    status = factory.Iterator(["潜在客户", "重点客户", "已成交"])
    contact_name = factory.Sequence(lambda n: f"刘{n}")
    mobile = factory.Sequence(lambda n: f"138{n:08d}" if n % 5 == 0 else "")
    latest_followup = "客户询问 7kW 交流桩安装，已寄送报价单。=SUM(A1)"
    tags = factory.LazyFunction(lambda: ["VIP", "渝A"])
    last_synced_at = T0


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    erp_id = factory.Sequence(lambda n: 50000 + n)
    name = factory.Sequence(lambda n: f"联系人{n}")
    title = "采购经理"


class ContractFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contract

    erp_id = factory.Sequence(lambda n: 90000 + n)
    number = factory.Sequence(lambda n: f"HT-2026-{n:05d}")
    title = "直流快充桩 120kW 采购合同"
    amount = factory.Sequence(lambda n: Decimal("12345.67") + n)
    signed_on = factory.Sequence(lambda n: dt.date(2026, 1, 1) + dt.timedelta(days=n % 300))
    status = "执行中"


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    chat_name = factory.Sequence(lambda n: f"客户群{n}")
    chat_type = factory.Iterator(["private", "group"])
    created_at = T0
    last_message_at = T0


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    client_msg_id = factory.Sequence(lambda n: f"wx-{n:08d}")
    sender = factory.Sequence(lambda n: f"客户{n % 97}")
    content = factory.Sequence(lambda n: f"你好，充电桩报 E0{n % 9} 故障怎么办？（{n}）")
    is_at_me = factory.Sequence(lambda n: n % 3 == 0)
    received_at = factory.Sequence(lambda n: T0 + dt.timedelta(seconds=n))
    status = "decided"
    decided_at = factory.Sequence(lambda n: T0 + dt.timedelta(seconds=n, milliseconds=120))


class ReplyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Reply

    content = "您好，E01 表示急停按钮被按下，请旋转复位后重新插枪。"
    status = factory.Iterator(["delivered", "delivered", "pending_review", "queued"])
    engine = "offline"
    confidence = factory.Sequence(lambda n: (n % 100) / 100)
    cost = factory.Sequence(lambda n: Decimal("0.000123") * (n % 7))
    citations = factory.LazyFunction(lambda: [{"entry_id": 1, "document": "FAQ", "version": "v1", "score": 0.91}])
    latency_ms = factory.LazyFunction(lambda: {"queue_wait": 3.1, "rules": 0.2, "retrieval": 1.4, "total": 9.8})
    created_at = factory.Sequence(lambda n: T0 + dt.timedelta(seconds=n, milliseconds=130))


class UsageRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageRecord

    call_id = factory.Sequence(lambda n: f"call-{n:08d}")
    created_at = factory.Sequence(lambda n: T0 + dt.timedelta(seconds=n))
    day = factory.Sequence(lambda n: (T0 + dt.timedelta(seconds=n)).date())
    provider = factory.Iterator(["deepseek", "qwen"])
    model = factory.Iterator(["deepseek-chat", "qwen-plus"])
    agent = "agent-000"
    input_tokens = factory.Sequence(lambda n: 100 + n % 50)
    output_tokens = factory.Sequence(lambda n: 30 + n % 20)
    cost = Decimal("0.000260")
    latency_ms = 812.5


class RuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rule

    name = factory.Sequence(lambda n: f"规则{n}")
    priority = factory.Sequence(lambda n: n)
    keywords = "人工\n转接"
    action = "handoff"
    time_start = dt.time(9, 0)
    time_end = dt.time(18, 0)


class EntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Entry

    question = factory.Sequence(lambda n: f"充电桩问题 {n}：7kW 交流桩需要什么线径？")
    answer = "建议使用 6 平方毫米铜芯线，并加装 40A 漏电保护开关。"
    section = "安装"
    tags = factory.LazyFunction(lambda: ["安装", "7kW"])
    embedding = factory.Sequence(lambda n: struct.pack("4f", n, 0.5, -1.25, 3.0))
    embedding_model = "text-embedding-v3"


def bulk(factory_class, count: int, **kwargs) -> list:
    model = factory_class._meta.model
    return model.objects.bulk_create(factory_class.build_batch(count, **kwargs), batch_size=2000)


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
            action_time=T0 + dt.timedelta(minutes=i),
        )
        for i in range(500)
    )
    every = IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="演示任务", task="celery.backend_cleanup", interval=every, kwargs='{"a": 1}')


@transaction.atomic
def fill_product_tables(messages: int) -> None:
    agents = bulk(AgentFactory, 3)
    customers = bulk(CustomerFactory, 239)
    for customer in customers:
        bulk(ContactFactory, 2, customer=customer)
    Contract.objects.bulk_create(
        [ContractFactory.build(customer=customers[i % len(customers)]) for i in range(600)], batch_size=2000
    )
    conversations = Conversation.objects.bulk_create(
        [ConversationFactory.build(agent=agents[i % len(agents)]) for i in range(max(1, messages // 20))]
    )
    made = Message.objects.bulk_create(
        [
            MessageFactory.build(conversation=conv, agent_id=conv.agent_id)
            for i in range(messages)
            for conv in [conversations[i % len(conversations)]]
        ],
        batch_size=2000,
    )
    Reply.objects.bulk_create(
        [ReplyFactory.build(message=m, conversation_id=m.conversation_id, agent_id=m.agent_id) for m in made],
        batch_size=2000,
    )
    bulk(UsageRecordFactory, messages)
    bulk(RuleFactory, 30)
    bulk(EntryFactory, 500)
    Provider.objects.bulk_create([Provider(name="deepseek", kind="deepseek", api_key="sk-migrated-secret-0001")])


def fill(messages: int = 10000) -> None:
    fill_platform_tables()
    fill_product_tables(messages)
