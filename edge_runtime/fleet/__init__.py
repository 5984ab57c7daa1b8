"""The plant side of the fleet: `edge-runtime collect` (MQTT 5 shared subscription -> a database,
acknowledged only after the commit) and `edge-runtime fleet` (per-device view of that database).

collector.py  the MQTT client and the batch writer      config.py  the collector's TOML
db.py         one small interface, url -> backend        db_sqlite.py, db_postgres.py
rows.py       message validation, result -> table row    view.py    the fleet view
cli.py        registers `collect` and `fleet`            bench.py   throughput measurement
"""
