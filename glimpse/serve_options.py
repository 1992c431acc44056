"""`glimpse serve`'s option types: a port, a thread count and a host that can be bound, checked before
anything starts, so a mistake is one usage line and exit 2 (click) instead of a traceback, a random port
(waitress takes 65536 as 0) or a server whose zero threads hang every request."""

from __future__ import annotations

import ipaddress
import re

import click

PORT = click.IntRange(0, 65535)  # 0: a free port
THREADS = click.IntRange(1, 1024)

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class HostType(click.ParamType):
    """An IP address (IPv6 with or without brackets) or a host name; checked without the network.

    Text that only digits and dots make up must be an IPv4 address (``256.1.1.1`` is not), since a resolver
    would otherwise send it to DNS; a name must be a valid DNS name. Whether a name resolves is for the
    bind to say (``cannot listen on …``)."""

    name = "host"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        try:
            return str(ipaddress.ip_address(bare))
        except ValueError:
            pass
        looks_numeric = bool(text) and all(c.isdigit() or c == "." for c in text)
        labels = text.rstrip(".").split(".")
        if looks_numeric or ":" in text or len(text) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
            self.fail(f"{value!r} is not an IP address or a host name", param, ctx)
        return text


HOST = HostType()
