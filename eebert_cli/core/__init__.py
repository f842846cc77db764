"""Foundations every layer uses: errors, value checks, the registry, UI, atomic writes, the hub, configs."""
