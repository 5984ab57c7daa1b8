"""The plant side's broker settings ([broker] of the collector's TOML) applied to a paho client:
credentials (password from the environment) and TLS. Shared by `collect` and `models publish/promote`."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt


def configure(client: mqtt.Client, cfg) -> mqtt.Client:  # noqa: ANN001 - fleet.config.CollectorConfig
    b = cfg.broker
    if b.get("username"):
        client.username_pw_set(b["username"], cfg.broker_password)
    tls = b.get("tls")
    if tls is not None:
        client.tls_set(ca_certs=tls.get("ca_file"), certfile=tls.get("cert_file"), keyfile=tls.get("key_file"),
                       cert_reqs=ssl.CERT_REQUIRED)
        if tls.get("insecure"):
            client.tls_insecure_set(True)
    return client
