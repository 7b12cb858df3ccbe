"""Where permessage-deflate lived before :mod:`.extensions`: the same names, re-exported.

The code is in :mod:`.extensions.permessage_deflate`; import from there in new code.
"""

from __future__ import annotations

# Every name of the module, public (its __all__, imported too) or not (for callers that
# reached into it).
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
from .extensions.permessage_deflate import __all__ as __all__
