"""The web setup view: a read-only page served by the service for setting up a camera and
watching a line (README "Web setup view"). Off unless `[web] port` is set; then the service
adds `WebView.state` to its observers and closes the view at shutdown."""

from __future__ import annotations

import os
from collections.abc import Callable

from edge_runtime.web.server import WebServer
from edge_runtime.web.state import WebState


class WebView:
    """The observer and the server for one `[web]` table of a validated config."""

    def __init__(self, config, status: Callable[[], dict]) -> None:  # noqa: ANN001 - config.Config
        w = config["web"]
        self.state = WebState(direction=config["dedup"]["direction"], blur_angle=config["reader"]["blur_angle"],
                              noread_dir=config["reader"]["noread_dir"])
        # check-config already refused a non-loopback host without a set, non-empty variable.
        token = os.environ.get(w["token_env"]) if w["token_env"] else None
        self.server = WebServer(w["host"], w["port"], self.state, status, token=token,
                                max_viewers=w["max_viewers"])
        host = w["host"]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{self.server.port}/"

    def close(self) -> None:
        self.server.close()


__all__ = ["WebView", "WebServer", "WebState"]
