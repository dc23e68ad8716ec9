import itertools

from django.test import Client

from apps.agents.auth import issue_tokens
from apps.agents.services import create_agent

_ids = itertools.count(1)


def make_agent(name: str = "终端"):
    agent, secret = create_agent(f"{name}{next(_ids)}")
    return agent, secret, issue_tokens(agent.id)["access_token"]


def body(client_id: str, content: str = "你好，请问充电桩怎么安装？", **extra) -> dict:
    message = {
        "id": client_id,
        "chat_name": extra.pop("chat_name", "张三"),
        "chat_type": "private",
        "sender": "张三",
        "content": content,
        "type": "text",
        "timestamp": 1764000000,
        "is_at_me": False,
    }
    message.update(extra)
    return {"message": message}


def post(token: str | None, payload, path: str = "/api/v1/messages", **headers):
    client = Client()
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    data = payload if isinstance(payload, str | bytes) else __import__("json").dumps(payload)
    return client.post(path, data=data, content_type="application/json", **headers)
