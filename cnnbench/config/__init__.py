"""Configs: the resolvers the YAML files use (resolvers), the checks every value passes before a
run starts (checks), the keys that say where or how a run runs (keys), and what a config read
from someone else's file may hold (trust)."""
