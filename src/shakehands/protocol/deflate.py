"""Where permessage-deflate lived before :mod:`.extensions`: the same names, re-exported.

The code is in :mod:`.extensions.permessage_deflate`; import from there in new code.
"""

from __future__ import annotations

# The module's other names, for callers that reached into it.
from .extensions.permessage_deflate import (  # noqa: F401
    _PARAM_RE,
    _STEP,
    _TAIL,
    _TOKEN_RE,
    EXTENSION_NAME,
    DeflateOptions,
    Params,
    PerMessageDeflate,
    _Offer,
    _parse_params,
    _split_outside_quotes,
    _window_bits,
    client_accept,
    client_offer,
    compression_options,
    parse_extensions,
    server_negotiate,
)

__all__ = [
    "EXTENSION_NAME",
    "DeflateOptions",
    "PerMessageDeflate",
    "parse_extensions",
    "server_negotiate",
    "client_offer",
    "client_accept",
    "compression_options",
]
