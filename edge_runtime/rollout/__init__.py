"""Model rollout over MQTT: signed bundles on channels (canary, stable), installed, self-tested
and switched to by the devices that follow that channel, with an automatic step back when the new
model reads worse than the one before it.

    keys.py     Ed25519 keys: the plant signs, each device holds the public key in its config
    bundle.py   the bundle's bytes: pack/sign (plant) and verify/unpack (device), pure functions
    monitor.py  the read-rate rule that sends a device back to its previous model
    device.py   the device side: receive, verify, install, self-test, switch, report, fall back
    plant.py    the plant side: publish a bundle, fetch one, promote canary -> stable from the db
"""
