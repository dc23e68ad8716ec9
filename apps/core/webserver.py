"""How every Daphne of the project starts (run_platform, docker, the tests' and bench's live servers):
`python -m apps.core.webserver -b HOST -p PORT [daphne options]` serves wxcs.asgi:application.

WebSocket message limit: the agent consumer enforces WS_MAX_MESSAGE_BYTES, the limit the protocol documents
(a larger message gets a `too_large` error frame and close 4413). Daphne's own transport limit is set to twice
that so such a message reaches the consumer; beyond the transport limit autobahn fails the connection itself,
and it is told to do so with a close frame (code 1009) instead of its default of dropping the TCP connection.
"""

import os
import sys

APPLICATION = "wxcs.asgi:application"


def argv(host: str, port: int | str) -> list[str]:
    """The command line of one Daphne on HOST:PORT."""
    return [sys.executable, "-m", "apps.core.webserver", "-b", str(host), "-p", str(port)]


def transport_limit() -> int:
    from django.conf import settings

    return 2 * settings.WS_MAX_MESSAGE_BYTES


def main(args: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")
    from daphne.cli import CommandLineInterface  # installs Twisted's asyncio reactor: before `reactor` below
    from daphne.server import Server
    from twisted.internet import reactor

    class ClosingServer(Server):
        """Daphne whose failed WebSocket connections end with a close frame (autobahn's failByDrop off)."""

        def run(self):
            reactor.callWhenRunning(lambda: self.ws_factory.setProtocolOptions(failByDrop=False))
            super().run()

    class WebServerCommand(CommandLineInterface):
        server_class = ClosingServer

    limit = str(transport_limit())
    WebServerCommand().run(
        [*args, "--websocket-max-message-size", limit, "--websocket-max-frame-size", limit, APPLICATION]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
