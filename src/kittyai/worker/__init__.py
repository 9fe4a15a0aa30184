"""KITTY workers: processes on any machine that run orchestrator steps needing a capability.

`python -m kittyai.worker --options F --data D` claims work items from the
orchestrator, runs them, and heartbeats its capacity on MQTT. Several may run on
one machine, each with its own data dir. Nothing here imports the orchestrator.
"""
