"""``edge-gateway fleet-sim``: many real gateways on one machine, for sizing and fault runs.

- ``members``: one simulated gateway: its directory, configuration and process;
- ``fleet``: all of them, their simulated devices (one event loop) and their links;
- ``faults``: kill -9 of a share of the gateways, a blackholed link for a share;
- ``usage``: memory (RSS, PSS) and CPU per gateway, from /proc through psutil;
- ``cli``: the command line.
"""
