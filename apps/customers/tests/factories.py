"""Customers test data. Real customers come from an ERP sync (the `synced` fixture); these are for the
rows a test needs beside them: WeChat bindings, or a customer without a simulator."""

import factory

from apps.customers.models import Contact, Customer, WeChatBinding


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    erp_id = factory.Sequence(lambda n: 900_000 + n)
    name = factory.Sequence(lambda n: f"测试{n}号充电科技有限公司")
    contact_name = factory.Sequence(lambda n: f"联系人{n}")
    k_code = factory.LazyAttribute(lambda o: f"K{o.erp_id}")


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    erp_id = factory.Sequence(lambda n: 900_000 + n)
    customer = factory.SubFactory(CustomerFactory)
    name = factory.Sequence(lambda n: f"联系人{n}")


class WeChatBindingFactory(factory.django.DjangoModelFactory):
    """A WeChat contact as an agent saw it; unmatched unless a customer and status are given."""

    class Meta:
        model = WeChatBinding

    agent_id = "agt_1"
    chat_name = factory.Sequence(lambda n: f"微信联系人{n}")
    sender = ""
    customer = None
