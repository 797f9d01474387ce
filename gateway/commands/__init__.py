"""Commands from the cloud (MQTT) or a technician (local API): checked, then run.

``docs/commands.md`` describes the requests, the checks and the built-in commands.
"""
