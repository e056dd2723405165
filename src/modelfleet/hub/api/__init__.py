"""Thin HTTP adapters over the hub's services: one router per resource."""
