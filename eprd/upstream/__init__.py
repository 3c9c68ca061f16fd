"""Outgoing HTTP: the one pooled client every remote source (proxy, storage, mirror) shares."""
