"""Reads of the customers app. `contact_identity` is the one place that decides which customer a WeChat
contact is: only a trusted binding (status BOUND: set by staff, confirmed by a supervisor, or from the
staff-written remark) unlocks the customer's profile, contracts and ERP context. A suggestion found in
a name the customer can edit never does."""

from dataclasses import dataclass

from apps.customers.models import Customer, WeChatBinding


@dataclass(frozen=True)
class ContactIdentity:
    customer: Customer | None  # the trusted customer of this contact, or None
    known: bool  # the contact (agent, chat, sender) already has its own binding row


def is_trusted(binding: WeChatBinding) -> bool:
    return binding.status == WeChatBinding.Status.BOUND and binding.customer_id is not None


def contact_identity(agent_id: str, chat_name: str, sender: str) -> ContactIdentity:
    """The trusted customer of this WeChat contact. A binding for (agent, chat, sender) wins over one for
    the whole chat (sender ""). One query."""
    sender = sender or ""
    bindings = sorted(
        WeChatBinding.objects.select_related("customer").filter(
            agent_id=agent_id, chat_name=chat_name, sender__in={sender, ""}
        ),
        key=lambda binding: binding.sender != sender,
    )
    customer = next((binding.customer for binding in bindings if is_trusted(binding)), None)
    return ContactIdentity(customer=customer, known=any(binding.sender == sender for binding in bindings))


def trusted_customer(agent_id: str, chat_name: str, sender: str) -> Customer | None:
    return contact_identity(agent_id, chat_name, sender).customer
